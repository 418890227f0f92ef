#!/usr/bin/env bash
# Debian's chromium, headless, for the test that renders `driftloop report`'s HTML and checks
# it loads without console errors and every image decodes.
source "$(dirname "$0")/lib.sh"
apt_install chromium
chromium --version >/dev/null
