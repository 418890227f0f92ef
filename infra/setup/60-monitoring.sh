#!/usr/bin/env bash
# Prometheus, Pushgateway, Alertmanager, node-exporter (and promtool/amtool) from Debian for
# the local stack and the tests, and the Prometheus JMX exporter agent for the Kafka broker
# (Maven Central, infra/kafka/jmx-exporter.version). The packages' own services stay off:
# driftloop starts the binaries itself on its own ports, so a policy-rc.d refuses service starts while installing.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
pkgs=(prometheus prometheus-pushgateway prometheus-alertmanager prometheus-node-exporter)
jmx_version=$(tr -d '[:space:]' < infra/kafka/jmx-exporter.version)
jmx_jar="$CACHE/kafka/agent/jmx_prometheus_javaagent-$jmx_version.jar"
if stamp_ok monitoring "$0" infra/kafka/jmx-exporter.version && command -v promtool >/dev/null \
   && command -v prometheus-pushgateway >/dev/null && command -v prometheus-alertmanager >/dev/null \
   && command -v prometheus-node-exporter >/dev/null && [[ -f $jmx_jar ]]; then
  exit 0
fi
policy=/usr/sbin/policy-rc.d
created_policy=""
if [[ ! -e $policy && $(id -u) -eq 0 ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
cleanup() { [[ -n $created_policy ]] && rm -f "$policy"; return 0; }
trap cleanup EXIT
apt_install "${pkgs[@]}"
# Stop anything a package may have started anyway (e.g. on systems where policy-rc.d was ignored).
for svc in prometheus prometheus-pushgateway prometheus-alertmanager prometheus-node-exporter; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
promtool --version >/dev/null
if [[ ! -f $jmx_jar ]]; then
  log "jmx_prometheus_javaagent $jmx_version"
  mvn -q -B dependency:copy -Dartifact="io.prometheus.jmx:jmx_prometheus_javaagent:$jmx_version" \
    -DoutputDirectory="$CACHE/kafka/agent"
fi
stamp_set monitoring "$0" infra/kafka/jmx-exporter.version
log "monitoring: $(prometheus --version 2>&1 | head -1)"
