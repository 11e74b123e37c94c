# reid-stream: `make demo` and `make test` are the two commands; the rest are their parts.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
CACHE_DIR ?= $(HOME)/.cache/reid-stream
# The virtualenv lives outside the clone, keyed by the dependencies (pyproject's lists and the lock), so clones
# and CI share it, and an edit elsewhere in pyproject.toml does not rebuild it.
DEPS_HASH := $(shell { $(PYTHON) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	print(sorted(p['dependencies']), sorted((k, sorted(v)) for k, v in p['optional-dependencies'].items()))"; \
	cat reid_stream/infra/requirements.lock; } | sha256sum | cut -c1-16)
VENV := $(CACHE_DIR)/venv-$(DEPS_HASH)
PY := .venv/bin/python
RUN_DIR := $(CACHE_DIR)/run

# Model hubs are unreachable here: fail at once rather than retry for ~45 s. Override with HF_HUB_OFFLINE=0.
export HF_HUB_OFFLINE ?= 1
export PYTHONPATH := $(CURDIR)
export REID_CACHE_DIR := $(CACHE_DIR)

# The demo runs offline on a synthetic site (`reid-stream synth`) with the real-weights encoder that ships in a
# package (MobileNetV2, ImageNet), at the threshold `make eval` calibrated for the entity rule with it (the best
# F1 with at most 1 % false merges), and the site's camera topology for the space-time gate.
# The demo's API token is made once per machine and kept beside the other run files.
DEMO_SITE := $(RUN_DIR)/demo-site
DEMO_THRESHOLD := 0.97
DEMO_ENV := REID_ENCODER=$${REID_ENCODER:-mobilenetv2} REID_IMAGE_ROOTS=$(DEMO_SITE) \
	REID_CAMERA_TOPOLOGY=$${REID_CAMERA_TOPOLOGY:-$(DEMO_SITE)/site.json} \
	REID_SIMILARITY_THRESHOLD=$${REID_SIMILARITY_THRESHOLD:-$(DEMO_THRESHOLD)} \
	REID_API_TOKENS=$${REID_API_TOKENS:-demo:$$(cat $(RUN_DIR)/demo-token)}
WEB_PORT := $${REID_WEB_PORT:-6066}

.PHONY: help install venv infra infra-down worker demo demo-stop test test-faults test-browser bench bench-ab eval test-unit lint format schemas clean

help:
	@echo "make demo   - install, start Kafka + Redis + a worker, stream a synthetic multi-camera site, show match events and their quality"
	@echo "make test   - the full test suite against real Kafka and Redis"
	@echo "make bench  - the benchmarks (results in bench/results/)"
	@echo "make eval   - identity quality of each encoder on the synthetic benchmark"
	@echo "make test-browser - the entity browser in headless Chromium (Debian's), against a real worker"
	@echo "make install | infra | infra-down | worker | demo-stop | lint | schemas | bench-ab (BASELINE=ref)"

install:
	@mkdir -p $(CACHE_DIR)
	@# The hash in the path is the cache key; flock keeps two clones from building the same venv at once.
	@flock $(CACHE_DIR)/.venv.lock $(MAKE) --no-print-directory venv
	@ln -sfn $(VENV) .venv
	@echo "virtualenv: .venv -> $(VENV)"

venv:
	@if [ ! -f $(VENV)/.complete ]; then \
		echo "creating $(VENV) (first time only: torch is large)"; \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && \
		$(VENV)/bin/python -m pip install -q --upgrade pip && \
		$(VENV)/bin/python -m pip install -q -c reid_stream/infra/requirements.lock \
			$$($(PYTHON) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
			print(' '.join(p['dependencies'] + p['optional-dependencies']['dev'] + p['optional-dependencies']['bench']))") && \
		touch $(VENV)/.complete; \
	fi

infra:
	$(PYTHON) -m reid_stream.infra up

infra-down:
	$(PYTHON) -m reid_stream.infra down

worker: install infra
	$(PY) -m reid_stream worker

demo: install infra
	@mkdir -p $(RUN_DIR)
	@[ -s $(RUN_DIR)/demo-token ] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > $(RUN_DIR)/demo-token)
	@# Drawn again whenever the generator changed since the site was drawn.
	@if [ ! -f $(DEMO_SITE)/stream.jsonl ] || [ ! -f $(DEMO_SITE)/stream-s1.jsonl ] || [ -n "$$(find reid_stream/eval/synth -name '*.py' -newer $(DEMO_SITE)/stream.jsonl)" ]; then \
		$(PY) -m reid_stream synth $(DEMO_SITE) --ids 12 --cameras 3 --seed 7 > /dev/null && \
		$(PY) -m reid_stream synth $(DEMO_SITE) --ids 12 --cameras 3 --seed 7 --session 1 > /dev/null; fi
	@if [ -f $(RUN_DIR)/demo-worker.pid ] && kill -0 $$(cat $(RUN_DIR)/demo-worker.pid) 2>/dev/null; then \
		echo "demo worker already running (pid $$(cat $(RUN_DIR)/demo-worker.pid))"; \
	else \
		$(DEMO_ENV) nohup $(PY) -m reid_stream worker > $(RUN_DIR)/demo-worker.log 2>&1 & echo $$! > $(RUN_DIR)/demo-worker.pid; \
		echo "started a worker in the background (pid $$(cat $(RUN_DIR)/demo-worker.pid), log $(RUN_DIR)/demo-worker.log)"; \
	fi
	@for i in $$(seq 1 180); do \
		curl -sf http://127.0.0.1:$(WEB_PORT)/ready > /dev/null && break; \
		kill -0 $$(cat $(RUN_DIR)/demo-worker.pid) 2>/dev/null || { tail -20 $(RUN_DIR)/demo-worker.log; exit 1; }; \
		sleep 1; \
	done
	@curl -sf http://127.0.0.1:$(WEB_PORT)/ready > /dev/null || { echo "worker not ready"; tail -20 $(RUN_DIR)/demo-worker.log; exit 1; }
	$(DEMO_ENV) $(PY) -m reid_stream demo --site $(DEMO_SITE)
	@echo
	@echo "To stop: 'make demo-stop' stops the worker, 'make infra-down' stops Kafka and Redis."
	@echo
	@echo "Entity browser: open http://127.0.0.1:$(WEB_PORT)/ and sign in with the token in $(RUN_DIR)/demo-token"

demo-stop:
	@if [ -f $(RUN_DIR)/demo-worker.pid ]; then kill $$(cat $(RUN_DIR)/demo-worker.pid) 2>/dev/null || true; \
		rm -f $(RUN_DIR)/demo-worker.pid; echo "demo worker stopped"; fi

test: install infra
	$(PY) -m pytest -q -p no:cacheprovider

# Benchmarks, apart from the tests: results (JSON, Markdown, PNG) land in bench/results/.
bench: install infra
	$(PY) -m bench.pipeline encoder
	$(PY) -m bench.pipeline batch
	$(PY) -m bench.pipeline overhead
	$(PY) -m bench.pipeline gpu
	$(PY) -m bench.scale
	$(PY) -m bench.store memory
	$(PY) -m bench.store restart
	$(PY) bench/search.py
	$(PY) -m bench.plates
	$(PY) -m bench.adaptation_cost
	$(PY) -m bench.report

# Identity quality of each encoder on the synthetic benchmark (bench/results/identity*), and entity assignment
# against the nearest-detection rule on a calibration site and a held-out one (bench/results/assignment*).
eval: install infra
	$(PY) -m bench.identity
	$(PY) -m bench.assignment
	$(PY) -m bench.adaptation

# Null-encoder throughput of this working tree against an earlier commit (default HEAD~1), side by side.
bench-ab: install infra
	$(PY) -m bench.pipeline ab --baseline $${BASELINE:-HEAD~1}

# Fault injection and load: crashes, outages, hostile input, 200 concurrent readers, schemathesis.
test-faults: install infra
	$(PY) -m pytest -q -p no:cacheprovider -s tests/faults

# The entity browser in Debian's headless chromium (installed here if missing), driving real workers.
test-browser: install infra
	$(PYTHON) -m reid_stream.infra browser
	$(PY) -m pytest -q -p no:cacheprovider tests/browser

test-unit: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

lint: install
	$(PY) -m ruff check reid_stream tests bench

format: install
	$(PY) -m ruff format reid_stream tests

schemas: install
	$(PY) -m reid_stream topics schemas

clean:
	rm -f .venv
