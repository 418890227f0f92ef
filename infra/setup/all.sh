#!/usr/bin/env bash
# Runs every setup step in order (NN-name.sh). Each step is idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
for step in "$here"/[0-9][0-9]-*.sh; do
  bash "$step"
done
