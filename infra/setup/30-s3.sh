#!/usr/bin/env bash
# A real S3-compatible server (Versity S3 Gateway, posix backend) built from the Go module proxy.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
VERSITYGW_VERSION=v1.8.0
mkdir -p "$CACHE/bin"
echo "$VERSITYGW_VERSION" > "$CACHE/versitygw.version"
if stamp_ok s3 "$CACHE/versitygw.version" && [[ -x "$CACHE/bin/versitygw" ]]; then exit 0; fi
command -v go >/dev/null 2>&1 || apt_install golang-go
log "building versitygw $VERSITYGW_VERSION (Go module proxy)"
GOBIN="$CACHE/bin" GOFLAGS=-mod=mod go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
stamp_set s3 "$CACHE/versitygw.version"
