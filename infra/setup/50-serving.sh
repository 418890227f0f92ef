#!/usr/bin/env bash
# The serving environment at .venv-serving/: MLServer 1.7 on Python 3.11 with the runtimes'
# dependencies (pocketsphinx, tesseract, OpenCV, scikit-learn, LiteRT) and driftloop installed editable.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
# tesseract (OCR weights from Debian), flite (test speech with known sentences).
apt_install tesseract-ocr tesseract-ocr-eng flite
if stamp_ok serving requirements/serving.txt pyproject.toml && [[ -x .venv-serving/bin/mlserver ]]; then
  exit 0
fi
make_venv .venv-serving
log "installing MLServer and the runtimes' dependencies into .venv-serving"
.venv-serving/bin/pip install -q -r requirements/serving.txt
.venv-serving/bin/pip install -q --no-deps -e .
stamp_set serving requirements/serving.txt pyproject.toml
