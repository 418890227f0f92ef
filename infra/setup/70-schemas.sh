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
STRIMZI_VERSION=0.46.1               # io.strimzi:api sources (Maven): annotation and label keys
SELF="$ROOT/infra/setup/70-schemas.sh"

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
  && [[ -f "$SCHEMAS/index/index.json" ]] && stamp_ok schemas-annotations "$PINS" "$SELF" \
  && [[ -f "$SCHEMAS/annotations/areas.json" ]]; then exit 0; fi

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

# Annotation and label keys are free strings to the schemas: the packages that declare the keys
# (and the values with a fixed vocabulary) the controllers read are kept, at the same pins, for
# driftloop.annotations (.cache/schemas/annotations/<area>/<package dir>/*.go|*.java).
ANN="$SCHEMAS/annotations"
if ! stamp_ok schemas-annotations "$PINS" "$SELF" || [[ ! -f "$ANN/areas.json" ]]; then
rm -rf "$ANN"
mkdir -p "$ANN"
log "keeping the upstream sources that declare annotation and label keys"
areas="$ANN/areas.txt"
: > "$areas"
# keep_go AREA MODULE@VERSION PATH... : the non-test .go files of each package dir (or file).
keep_go() {
  local area=$1 modver=$2 d p; shift 2
  d=$(mod_dir "$modver")
  for p in "$@"; do
    if [[ -f "$d/$p" ]]; then
      mkdir -p "$ANN/$area/$(dirname "$p")" && cp "$d/$p" "$ANN/$area/$p"
    else
      mkdir -p "$ANN/$area/$p"
      find "$d/$p" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "$ANN/$area/$p/" \;
    fi
  done
  echo "$area go ${modver%@*} ${modver#*@}" >> "$areas"
}
# keep_java AREA GROUP:ARTIFACT:VERSION CLASS_PATH... : classes of the artifact's sources jar.
keep_java() {
  local area=$1 gav=$2 tmp; shift 2
  tmp=$(mktemp -d)
  mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    -Dartifact="$gav:jar:sources" -DoutputDirectory="$tmp"
  "$PYTHON" - "$tmp" "$ANN/$area" "$@" <<'EOF'
import pathlib, sys, zipfile
jar = next(pathlib.Path(sys.argv[1]).glob("*-sources.jar"))
out = pathlib.Path(sys.argv[2])
with zipfile.ZipFile(jar) as z:
    for name in sys.argv[3:]:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(z.read(name))
EOF
  rm -rf "$tmp"
  echo "$area java $gav" >> "$areas"
}
d=$(mod_dir "knative.dev/serving@$KNATIVE_SERVING_VERSION")
NETWORKING_VERSION=$(awk '$1 == "knative.dev/networking" {print $2}' "$d/go.mod")
keep_go serving "knative.dev/serving@$KNATIVE_SERVING_VERSION" pkg/apis/autoscaling pkg/apis/serving
keep_go networking "knative.dev/networking@$NETWORKING_VERSION" pkg/apis/networking
keep_go eventing "knative.dev/eventing@$KNATIVE_EVENTING_VERSION" pkg/apis/eventing \
  pkg/apis/eventing/v1 pkg/apis/duck/v1 pkg/apis/feature pkg/apis/sources pkg/apis/messaging
keep_go kafka-broker "knative.dev/eventing-kafka-broker@$KAFKA_BROKER_VERSION" \
  control-plane/pkg/autoscaler control-plane/pkg/autoscaler/keda control-plane/pkg/apis/config \
  control-plane/pkg/apis/internalskafkaeventing control-plane/pkg/apis/sources/v1 \
  control-plane/pkg/apis/eventing control-plane/pkg/kafka control-plane/pkg/reconciler/trigger/v2
keep_go keda "github.com/kedacore/keda/v2@$KEDA_VERSION" apis/keda/v1alpha1 \
  pkg/scalers/kafka_scaler.go
keep_go prometheus-operator \
  "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" pkg/operator
keep_go kserve "github.com/kserve/kserve@$KSERVE_VERSION" pkg/constants
# k8s.io/api is the module k8s.io/kubernetes $K8S_VERSION stages as v0.<minor>.<patch>.
keep_go k8s "k8s.io/api@v0${K8S_VERSION#v1}" core/v1/well_known_labels.go \
  core/v1/annotation_key_constants.go core/v1/well_known_taints.go
keep_java strimzi "io.strimzi:api:$STRIMZI_VERSION" io/strimzi/api/ResourceAnnotations.java \
  io/strimzi/api/ResourceLabels.java
keep_java flink-operator "org.apache.flink:flink-kubernetes-operator-api:$FLINK_OPERATOR_VERSION" \
  org/apache/flink/kubernetes/operator/api/CrdConstants.java
"$PYTHON" - "$areas" "$ANN/areas.json" <<'EOF'
import json, sys
areas = {}
for line in open(sys.argv[1]):
    area, lang, *ref = line.split()
    if lang == "go":
        areas[area] = {"lang": "go", "module": ref[0], "version": ref[1]}
    else:
        areas[area] = {"lang": "java", "artifact": ref[0]}
json.dump(areas, open(sys.argv[2], "w"), indent=1, sort_keys=True)
EOF
chmod -R u+w "$ANN"
stamp_set schemas-annotations "$PINS" "$SELF"
fi

log "indexing schemas"
rm -rf "$SCHEMAS/index"
.venv/bin/python -m driftloop.manifests index --src "$src" --out "$SCHEMAS/index" --pins "$PINS"
stamp_set schemas-index "$PINS" driftloop/manifests.py
