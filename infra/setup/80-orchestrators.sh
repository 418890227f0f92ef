#!/usr/bin/env bash
# Optional training orchestrators, each in its own venv so their pins never touch .venv:
# Airflow (.venv-airflow) runs the rendered DAG with `airflow dags test`; the kfp SDK
# (.venv-kfp) compiles the pipeline and runs its component locally. driftloop itself is not
# installed there: the DAG's task and the component run the job with .venv's interpreter.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
if stamp_ok orchestrators "$0" requirements/airflow.txt requirements/kfp.txt \
   && [[ -x .venv-airflow/bin/airflow && -x .venv-kfp/bin/python ]]; then
  exit 0
fi
make_venv .venv-airflow
log "installing Airflow into .venv-airflow"
.venv-airflow/bin/pip install -q -r requirements/airflow.txt
make_venv .venv-kfp
log "installing the kfp SDK into .venv-kfp"
.venv-kfp/bin/pip install -q -r requirements/kfp.txt
stamp_set orchestrators "$0" requirements/airflow.txt requirements/kfp.txt
