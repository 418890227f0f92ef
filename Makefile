# driftloop: `make demo` runs the loop on the embedded defaults, `make test` runs every test level.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-unit test-integration lint bench up down status clean

setup:
	bash infra/setup/all.sh

demo: setup
	$(VENV)/bin/driftloop demo

test: setup
	$(VENV)/bin/ruff check driftloop functions flink seldon tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -ra --durations=0 --durations-min=5

# test-unit starts no server: tests that need one (marked `servers` by tests/conftest.py)
# run with the integration level.
test-unit: setup
	$(VENV)/bin/pytest -ra -m "not servers" tests/unit tests/app

test-integration: setup
	$(VENV)/bin/pytest -ra -m "servers or integration or e2e" tests

# mypy --strict over driftloop/ (config: [tool.mypy] in pyproject.toml).
lint:
	$(VENV)/bin/ruff check driftloop functions flink seldon tests bench
	$(VENV)/bin/ruff format --check driftloop functions flink seldon tests bench
	$(VENV)/bin/mypy

# bench: the benches with short defaults, each writing its figures to .driftloop/bench/*.json,
# then the capacity plan recomputed from them (docs/capacity.md explains the model), then
# one table of every goal: figure, goal, measured, met or missed (bench/goals.py).
BENCH_OUT := .driftloop/bench
bench: setup
	mkdir -p $(BENCH_OUT)
	$(PY) bench/intake.py --seconds 3 --rounds 2 --out-json $(BENCH_OUT)/intake.json
	$(PY) bench/cold_start.py --runs 3 --out-json $(BENCH_OUT)/cold_start.json
	$(PY) bench/dispatcher.py --events 2000 --rounds 2 --out-json $(BENCH_OUT)/dispatcher.json
	$(PY) bench/drift.py --rows 200000 --repeat 3 --scipy-repeat 1 --skip-evidently \
		--out-json $(BENCH_OUT)/drift.json
	.venv-serving/bin/python bench/serving.py --n 10 --out-json $(BENCH_OUT)/serving.json
	.venv-serving/bin/python bench/objects.py --rounds 10 --out-json $(BENCH_OUT)/objects.json
	$(PY) -m bench.flink_preprocess --items 40 --repeats 2 --warmup 20 --by-ref-above 65536 \
		--out-json $(BENCH_OUT)/flink_preprocess.json
	$(PY) bench/capacity.py --dir $(BENCH_OUT)
	$(PY) bench/goals.py --dir $(BENCH_OUT)

up: setup
	$(VENV)/bin/driftloop up

down:
	$(VENV)/bin/driftloop down

status:
	$(VENV)/bin/driftloop status

clean:
	-$(VENV)/bin/driftloop down
	rm -rf .driftloop
