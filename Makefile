# hypoxnode developer entry points. Each target works as the first command on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo serve test check constraints lint system-deps venv viewers clean

# System tools the tests and demo use as real peers: DCMTK (storescu/echoscu), dicom3tools
# (dciodvfy), Orthanc (the PACS) with its DICOMweb plugin (what OHIF reads), Chromium +
# chromedriver (the status page and OHIF in a real browser), systemd (systemd-analyze verify
# of the unit), PixelMed (its SR and IOD validators, with a Java runtime), Node.js + npm (dcmjs
# and OHIF), haproxy (the load balancer in front of several nodes) and PostgreSQL (the shared
# index of several nodes; the tests start throwaway clusters of their own). Installed with apt
# when running as root and missing; the packages' own services are stopped again.
system-deps:
	@missing=""; \
	command -v storescu >/dev/null 2>&1 || missing="$$missing dcmtk"; \
	command -v dciodvfy >/dev/null 2>&1 || missing="$$missing dicom3tools"; \
	command -v Orthanc  >/dev/null 2>&1 || missing="$$missing orthanc"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	test -f /usr/share/java/pixelmed.jar || missing="$$missing libpixelmed-java"; \
	command -v java >/dev/null 2>&1 || missing="$$missing default-jre-headless"; \
	test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so || missing="$$missing orthanc-dicomweb"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	command -v haproxy >/dev/null 2>&1 || missing="$$missing haproxy"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    for unit in orthanc haproxy postgresql; do \
	      systemctl disable --now $$unit >/dev/null 2>&1 || service $$unit stop >/dev/null 2>&1 || true; \
	    done; \
	  else \
	    echo "missing system packages:$$missing (install them with apt as root)" >&2; exit 1; \
	  fi; \
	fi

# constraints.txt pins every package the tests and the demo install (pip freeze of a venv that
# passed `make test`); refresh it with `make constraints` after changing pyproject.toml.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

constraints: venv
	$(PY) -m pip freeze --exclude-editable | grep -v '^hypoxnode' | grep '==' > constraints.txt

venv: $(STAMP)

# JavaScript readers of tests/integration/test_viewers_*.py: dcmjs from tests/viewers/package-lock.json,
# and the prebuilt OHIF viewer (the dist/ of the npm package @ohif/app, checked against the
# registry's integrity in tests/viewers/ohif.integrity; its npm dependencies do not resolve,
# and the prebuilt bundle needs none of them).
VIEWERS := tests/viewers
OHIF_VERSION := 3.13.2
viewers: system-deps $(VIEWERS)/node_modules/.installed $(VIEWERS)/ohif/index.html

$(VIEWERS)/node_modules/.installed: $(VIEWERS)/package.json $(VIEWERS)/package-lock.json
	cd $(VIEWERS) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

$(VIEWERS)/ohif/index.html: $(VIEWERS)/ohif.integrity
	rm -rf $(VIEWERS)/ohif $(VIEWERS)/.ohif-pack && mkdir -p $(VIEWERS)/.ohif-pack
	cd $(VIEWERS)/.ohif-pack && npm pack --silent @ohif/app@$(OHIF_VERSION) >/dev/null
	$(PYTHON) -c 'import base64, hashlib, sys; d = open(sys.argv[1], "rb").read(); \
	  ok = "sha512-" + base64.b64encode(hashlib.sha512(d).digest()).decode() == open(sys.argv[2]).read().strip(); \
	  sys.exit(0 if ok else "OHIF tarball: integrity mismatch")' \
	  $(VIEWERS)/.ohif-pack/ohif-app-$(OHIF_VERSION).tgz $(VIEWERS)/ohif.integrity
	tar xzf $(VIEWERS)/.ohif-pack/ohif-app-$(OHIF_VERSION).tgz -C $(VIEWERS)/.ohif-pack
	mv $(VIEWERS)/.ohif-pack/package/dist $(VIEWERS)/ohif && rm -rf $(VIEWERS)/.ohif-pack
	touch $@

demo: venv system-deps
	$(PY) -m service demo

serve: venv
	$(VENV)/bin/hypoxnode serve $(if $(CONFIG),--config $(CONFIG),)

lint: venv
	$(VENV)/bin/ruff check service quant dicom_templates tests
	$(VENV)/bin/mypy

test: venv system-deps viewers lint
	$(PY) -m pytest -q

# The fast inner loop: lint, types and the unit tests (no real peers: see PEER_WORDS in
# tests/conftest.py) on every core. `make test` runs everything, as CI does.
check: venv lint
	$(PY) -m pytest -q -n auto -m "not integration"

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache tests/data/_unpacked
	rm -rf $(VIEWERS)/node_modules $(VIEWERS)/ohif $(VIEWERS)/.ohif-pack

# Throughput, latency and memory side by side with DCMTK storescp and Orthanc (not part of
# `make test`; ~20 min on 2 cores). BENCH_ARGS=--quick for a < 3 min smoke run; see
# tests/bench/run_bench.py for the options. Results: docs/bench/latest.{json,md}.
.PHONY: bench
bench: venv system-deps
	test -x $(VENV)/bin/py-spy || $(PY) -m pip install -q py-spy
	$(PY) -m tests.bench.run_bench $(BENCH_ARGS)
