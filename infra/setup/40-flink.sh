#!/usr/bin/env bash
# The Flink environment at .venv-flink/ (PyFlink 2.2 on Python 3.11, kept apart from .venv
# because apache-flink pins apache-beam) and the connector jars resolved from Maven Central
# through flink/pom.xml into .cache/flink/lib.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null 2>&1 || apt_install maven

if ! stamp_ok flink-venv requirements/flink.txt pyproject.toml || [[ ! -x .venv-flink/bin/python ]]; then
  make_venv .venv-flink
  log "installing PyFlink into .venv-flink"
  .venv-flink/bin/pip install -q -r requirements/flink.txt
  .venv-flink/bin/pip install -q --no-deps -e .
  stamp_set flink-venv requirements/flink.txt pyproject.toml
fi

if ! stamp_ok flink-jars flink/pom.xml || [[ ! -d "$CACHE/flink/lib" ]] \
    || [[ ! -d "$CACHE/flink/plugins/s3-fs-hadoop" ]]; then
  log "resolving Flink connector jars and the S3 plugin from Maven Central"
  rm -rf "$CACHE/flink/lib" "$CACHE/flink/plugins"
  mvn -q -B -f flink/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
    -DexcludeArtifactIds=flink-s3-fs-hadoop -DoutputDirectory="$CACHE/flink/lib"
  # Flink loads file systems as plugins, each in its own folder, apart from the classpath.
  mvn -q -B -f flink/pom.xml dependency:copy-dependencies -DexcludeTransitive=true \
    -DincludeArtifactIds=flink-s3-fs-hadoop -DoutputDirectory="$CACHE/flink/plugins/s3-fs-hadoop"
  stamp_set flink-jars flink/pom.xml
fi
