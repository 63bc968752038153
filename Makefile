# deepfit: `make run` sets up .venv from the lock file and runs the pipeline; `make test` tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 5000
# Stages call `python -m deepfit.stages...`; put the environment's python first on PATH.
export PATH := $(BIN):$(PATH)

.PHONY: setup run test ui plots metrics bench lint format lock clean sweep server server-stop \
  audit venv-moved

# A .venv made in another folder (the project was copied or renamed) keeps that folder's paths:
# script shebangs and the editable install of deepfit point there. Rebuild it from scratch.
VENV_MOVED := $(shell test -e $(VENV)/bin/deepfit && \
  ! head -n 3 $(VENV)/bin/deepfit | grep -qF '$(BIN)/python' && echo yes)
ifeq ($(VENV_MOVED),yes)
$(STAMP): venv-moved
endif

setup: $(STAMP)

venv-moved:
	@echo "$(VENV) was made for another folder; rebuilding it here"

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "deepfit needs Python 3.11 (set PYTHON=...)"'
	$(PYTHON) -m venv $(if $(VENV_MOVED),--clear )$(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

run: setup  ## set up, then run the whole pipeline (cached stages are skipped)
	dvc repro
	@echo "Results: reports/summary.md. Then: make ui (MLflow runs and curves), make plots,"
	@echo "make metrics, and .venv/bin/deepfit compare (every run beside the best)."

test: setup  ## set up, then run the whole test suite (slow end-to-end tests included)
	python -m pytest

ui: setup  ## MLflow UI on http://127.0.0.1:$(PORT) (loopback only)
	mlflow ui --host 127.0.0.1 --port $(PORT) --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

# DB=sqlite serves mlflow.db; DB=postgres runs a PostgreSQL cluster in .dvc/tmp/deepfit/postgres/.
# Foreground: Ctrl-C stops both. `make server-stop` stops one started with ARGS=--detach.
DB ?= sqlite
server: setup  ## MLflow tracking server on http://127.0.0.1:$(PORT) (loopback only); DB=postgres
	deepfit server --db $(DB) --port $(PORT) $(ARGS)

server-stop: setup  ## stop what `make server` started (by PID)
	deepfit server stop

# A queued sweep: one DVC experiment per grid point, $(JOBS) at a time, each in its own copy under
# .dvc/tmp/exps/. Waits until the queue is empty, then prints the best run per architecture.
# Watch it from another shell with `dvc queue status` and `dvc queue logs -f <exp>`; Ctrl-C stops
# only the waiting (`dvc queue kill <exp>` or `dvc queue stop --kill` stop the experiments).
SWEEP ?= -S 'runs.fnn.activation=relu,tanh' -S '++runs.fnn.train.optimizer.name=sgd,adam'
JOBS ?= 2
sweep: setup  ## queue the SWEEP grid of DVC experiments, run JOBS at a time, compare the results
	dvc exp run --queue $(SWEEP)
	dvc queue start -j $(JOBS)
	@echo "waiting for the queue (watch: dvc queue status; dvc queue logs -f <exp>)"
	@while dvc queue status 2>/dev/null | grep -qwE 'Queued|Running'; do sleep 10; done
	dvc queue status
	deepfit compare --best-per model

plots: setup  ## render every DVC plot to dvc_plots/index.html
	dvc plots show

metrics: setup
	dvc metrics show

bench: setup  ## every speed and quality target, in temporary copies (about 45 min): reports/benchmarks.md
	python benchmarks/bench.py

lint: setup
	ruff check . && ruff format --check .

# Audits exactly the pins of requirements.lock (no install, no resolving) against PyPI's
# vulnerability data; --strict fails when a package cannot be looked up instead of skipping it.
audit: setup  ## known vulnerabilities of the pinned packages (pip-audit; needs PyPI's JSON API)
	pip-audit --strict --disable-pip --no-deps --progress-spinner off -r requirements.lock

format: setup
	ruff format . && ruff check --fix .

lock:  ## re-resolve requirements.in into requirements.lock (needs the registry)
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet -r requirements.in
	.lockenv/bin/python -m pip freeze --exclude-editable > requirements.lock
	rm -rf .lockenv

clean:  ## remove pipeline outputs and the tracking store (keeps .venv)
	rm -rf data/prepared models reports/metrics reports/plots reports/figures reports/summary.md \
	  mlflow.db mlruns mlartifacts dvc_plots
