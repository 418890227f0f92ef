#!/usr/bin/env bash
# Manifest tooling and the upstream schemas the manifests are validated against.
#
# kustomize is built from the Go module proxy. The schemas are never written by hand:
# CRD YAMLs and OpenAPI documents are taken, at pinned versions, from the module zips
# of the projects that publish them (Go module proxy) and from the Flink Kubernetes
# Operator's api jar (Maven Central), then indexed by driftloop.manifests into
# .cache/schemas/index (one JSON schema per apiVersion/kind).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

KUSTOMIZE_VERSION=v5.7.1
K8S_VERSION=v1.34.4                  # k8s.io/kubernetes: api/openapi-spec/v3
KNATIVE_SERVING_VERSION=v0.50.0      # knative.dev/serving: config/core/300-resources
KNATIVE_EVENTING_VERSION=v0.50.0     # knative.dev/eventing: config/core/resources
KAFKA_BROKER_VERSION=v0.50.1         # knative.dev/eventing-kafka-broker: KafkaSource, KafkaSink
                                     #   (its module also ships Strimzi 0.46.1's release CRDs)
KNATIVE_FUNC_VERSION=v0.50.1         # knative.dev/func: schema/func_yaml-schema.json
KEDA_VERSION=v2.16.1                 # github.com/kedacore/keda/v2: config/crd/bases
PROMETHEUS_OPERATOR_VERSION=v0.85.0  # prometheus-operator: example/prometheus-operator-crd
FLINK_OPERATOR_VERSION=1.10.0        # org.apache.flink:flink-kubernetes-operator-api (Maven)
KSERVE_VERSION=v0.16.0               # github.com/kserve/kserve: config/crd/full (the KServe alternative)

SCHEMAS="$CACHE/schemas"
PINS="$CACHE/schemas.pins"
mkdir -p "$CACHE/bin" "$SCHEMAS"
cat > "$PINS" <<EOF
kustomize $KUSTOMIZE_VERSION
k8s $K8S_VERSION
serving $KNATIVE_SERVING_VERSION
eventing $KNATIVE_EVENTING_VERSION
kafka-broker $KAFKA_BROKER_VERSION
strimzi 0.46.1 (release CRDs vendored in knative.dev/eventing-kafka-broker $KAFKA_BROKER_VERSION)
func $KNATIVE_FUNC_VERSION
keda $KEDA_VERSION
prometheus-operator $PROMETHEUS_OPERATOR_VERSION
flink-operator $FLINK_OPERATOR_VERSION
kserve $KSERVE_VERSION
EOF
if stamp_ok schemas-index "$PINS" driftloop/manifests.py && [[ -x "$CACHE/bin/kustomize" ]] \
  && [[ -f "$SCHEMAS/index/index.json" ]]; then exit 0; fi

command -v go >/dev/null 2>&1 || apt_install golang-go
command -v mvn >/dev/null 2>&1 || apt_install maven

if [[ ! -x "$CACHE/bin/kustomize" ]] || ! "$CACHE/bin/kustomize" version 2>/dev/null | grep -q "$KUSTOMIZE_VERSION"; then
  log "building kustomize $KUSTOMIZE_VERSION (Go module proxy)"
  GOBIN="$CACHE/bin" GOFLAGS=-mod=mod go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi

# mod_dir MODULE@VERSION : downloads the module zip and prints the extracted directory.
mod_dir() {
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "$1") \
    | "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error","no Dir")))'
  rm -rf "$tmp"
}

src="$SCHEMAS/src"
if ! stamp_ok schemas-src "$PINS" || [[ ! -d "$src" ]]; then
rm -rf "$src"
mkdir -p "$src"/{k8s,serving,eventing,kafka-broker,strimzi,keda,prometheus-operator,flink-operator,func,kserve}
log "fetching upstream schemas (Go module proxy, Maven Central)"
d=$(mod_dir "k8s.io/kubernetes@$K8S_VERSION")
cp "$d"/api/openapi-spec/v3/*.json "$src/k8s/"
d=$(mod_dir "knative.dev/serving@$KNATIVE_SERVING_VERSION")
cp "$d"/config/core/300-resources/*.yaml "$src/serving/"
d=$(mod_dir "knative.dev/eventing@$KNATIVE_EVENTING_VERSION")
cp "$d"/config/core/resources/*.yaml "$src/eventing/"
d=$(mod_dir "knative.dev/eventing-kafka-broker@$KAFKA_BROKER_VERSION")
cp "$d"/control-plane/config/eventing-kafka-broker/100-source/*.yaml \
   "$d"/control-plane/config/eventing-kafka-broker/100-sink/*.yaml \
   "$d"/control-plane/config/eventing-kafka-broker/100-channel/*.yaml "$src/kafka-broker/"
cp "$d"/test/kafka/strimzi-cluster-operator.yaml "$src/strimzi/"
d=$(mod_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")
cp "$d"/config/crd/bases/*.yaml "$src/keda/"
d=$(mod_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
cp "$d"/example/prometheus-operator-crd/*.yaml "$src/prometheus-operator/"
d=$(mod_dir "github.com/kserve/kserve@$KSERVE_VERSION")
cp "$d"/config/crd/full/serving.kserve.io_*.yaml "$src/kserve/"
d=$(mod_dir "knative.dev/func@$KNATIVE_FUNC_VERSION")
cp "$d"/schema/func_yaml-schema.json "$src/func/"
mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
  -Dartifact="org.apache.flink:flink-kubernetes-operator-api:$FLINK_OPERATOR_VERSION:jar" \
  -DoutputDirectory="$src/flink-operator"
"$PYTHON" - "$src/flink-operator" <<'EOF'
import pathlib, sys, zipfile
out = pathlib.Path(sys.argv[1])
for jar in out.glob("*.jar"):
    with zipfile.ZipFile(jar) as z:
        for n in z.namelist():
            if n.startswith("META-INF/fabric8/") and n.endswith("-v1.yml"):
                (out / pathlib.Path(n).name).write_bytes(z.read(n))
EOF
chmod -R u+w "$src"
stamp_set schemas-src "$PINS"
fi

log "indexing schemas"
rm -rf "$SCHEMAS/index"
.venv/bin/python -m driftloop.manifests index --src "$src" --out "$SCHEMAS/index" --pins "$PINS"
stamp_set schemas-index "$PINS" driftloop/manifests.py
