# Shared helpers for the setup steps; sourced, never run.
# Every step is idempotent: it records a stamp holding the hash of its inputs and
# skips itself when the stamp matches.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="$ROOT/.cache"
STAMPS="$CACHE/stamps"
mkdir -p "$STAMPS"
PYTHON="${DRIFTLOOP_PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

log() { printf '[setup] %s\n' "$*" >&2; }

# stamp_ok NAME FILE... : true when the inputs' hash equals the recorded one.
stamp_ok() {
  local name=$1; shift
  local want; want=$(cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1)
  [[ -f "$STAMPS/$name" && "$(cat "$STAMPS/$name")" == "$want" ]]
}
stamp_set() {
  local name=$1; shift
  cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1 > "$STAMPS/$name"
}

# apt_install PKG... : installs the Debian packages that are missing (apt-get update once per run).
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  local sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  if [[ ! -f "$CACHE/apt-updated" ]] || [[ -n $(find "$CACHE/apt-updated" -mmin +720 2>/dev/null) ]]; then
    log "apt-get update"
    $sudo apt-get update -qq >/dev/null
    touch "$CACHE/apt-updated"
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# make_venv DIR : creates a venv with the project's Python when missing.
make_venv() {
  local dir=$1
  if [[ ! -x "$dir/bin/python" ]]; then
    log "creating $dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip
  fi
}
