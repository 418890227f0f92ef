#!/usr/bin/env bash
# The library + CLI + functions environment at .venv/.
shopt -s nullglob
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
reqs=(requirements/base.txt requirements/base-*.txt)
if stamp_ok base pyproject.toml "${reqs[@]}"; then exit 0; fi
make_venv .venv
log "installing driftloop into .venv"
.venv/bin/pip install -q $(printf -- '-r %s ' "${reqs[@]}") -e '.[functions,dev]'
stamp_set base pyproject.toml "${reqs[@]}"
