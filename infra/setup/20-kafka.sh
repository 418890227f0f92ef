#!/usr/bin/env bash
# Apache Kafka jars from Maven Central (through infra/kafka/pom.xml) into .cache/kafka/libs.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
command -v mvn >/dev/null 2>&1 || apt_install maven
if stamp_ok kafka infra/kafka/pom.xml && [[ -d "$CACHE/kafka/libs" ]]; then exit 0; fi
log "resolving Kafka jars from Maven Central"
rm -rf "$CACHE/kafka/libs"
mvn -q -B -f infra/kafka/pom.xml dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$CACHE/kafka/libs"
# Kafka 4 logs through log4j2; drop any other slf4j binding that came along.
rm -f "$CACHE"/kafka/libs/slf4j-reload4j-*.jar "$CACHE"/kafka/libs/reload4j-*.jar
stamp_set kafka infra/kafka/pom.xml
