# hypoxnode developer entry points. Each target works as the first command on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo serve test lint system-deps venv clean

# System tools the tests and demo use as real peers: DCMTK (storescu/echoscu), dicom3tools
# (dciodvfy), Orthanc (the PACS), Chromium + chromedriver (the status page in a real
# browser), systemd (systemd-analyze verify of the unit). Installed with apt when running as
# root and missing.
system-deps:
	@missing=""; \
	command -v storescu >/dev/null 2>&1 || missing="$$missing dcmtk"; \
	command -v dciodvfy >/dev/null 2>&1 || missing="$$missing dicom3tools"; \
	command -v Orthanc  >/dev/null 2>&1 || missing="$$missing orthanc"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    systemctl disable --now orthanc >/dev/null 2>&1 || service orthanc stop >/dev/null 2>&1 || true; \
	  else \
	    echo "missing system packages:$$missing (install them with apt as root)" >&2; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv system-deps
	$(PY) -m service demo

serve: venv
	$(VENV)/bin/hypoxnode serve $(if $(CONFIG),--config $(CONFIG),)

lint: venv
	$(VENV)/bin/ruff check service quant dicom_templates tests
	$(VENV)/bin/mypy

test: venv system-deps lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache tests/data/_unpacked

# Throughput, latency and memory side by side with DCMTK storescp and Orthanc (not part of
# `make test`; ~20 min on 2 cores). BENCH_ARGS=--quick for a < 3 min smoke run; see
# tests/bench/run_bench.py for the options. Results: docs/bench/latest.{json,md}.
.PHONY: bench
bench: venv system-deps
	test -x $(VENV)/bin/py-spy || $(PY) -m pip install -q py-spy
	$(PY) -m tests.bench.run_bench $(BENCH_ARGS)
