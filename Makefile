# One entry point for people and CI. Every target installs what it needs into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8080
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: install demo test lint bench profile reliability screenshots clean mutation

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml receiver/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet -e ./receiver
	touch $@

# The service with its simulators (ChronoPay, the cabinet, billing) on http://127.0.0.1:$(PORT)
demo: install
	@echo "Open http://127.0.0.1:$(PORT)/sandbox/cabinet/ (subscriber dem001; card 4111 1111 1111 1111)"
	GATEWAY_CONFIG=config.sandbox.py \
	GATEWAY_PUBLIC_URL=http://127.0.0.1:$(PORT) \
	GATEWAY_CHRONOPAY_URL=http://127.0.0.1:$(PORT)/sandbox/chronopay/ \
	GATEWAY_CABINET_URL=http://127.0.0.1:$(PORT)/sandbox/cabinet/ \
	GATEWAY_BILLING_URL=http://127.0.0.1:$(PORT)/sandbox/billing/ \
	LISTEN=127.0.0.1:$(PORT) $(PY) wsgi.py

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The reliability and security suite; RELIABILITY_SCALE=10 for bigger run counts.
reliability: install
	RELIABILITY_REPORT=docs/reliability.md $(PY) -m pytest tests/reliability --no-cov -q $(PYTEST_ARGS)

# The gateway against bare Flask on this machine; prints the table, writes bench/results.md.
# BENCH_DURATION (s per run), BENCH_ROUNDS, BENCH_CONCURRENCY, BENCH_GROWTH(_ROUNDS) override.
bench: install
	$(PY) -m bench.run

# Where a bench scenario's time goes: py-spy samples the gateway under load (see bench/profile.py).
profile: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.profile $(PROFILE_ARGS)

# Mutation testing of the money modules (mutmut, see docs/mutation.md); not part of `make test`.
# A fresh run every time: mutmut's cache would keep verdicts of code since changed.
mutation: install
	$(PY) -m pip install --quiet -e '.[mutation]'
	rm -rf mutants
	nice -n 10 $(VENV)/bin/mutmut run --max-children 2 > /dev/null
	$(PY) tests/mutation_report.py $(MUTATION_ARGS)

lint: install
	$(VENV)/bin/ruff check gateway tests wsgi.py bench receiver

# Every subscriber page at 360 and 1280 px, taken by the browser test, for docs/pages.md.
screenshots: install
	rm -f docs/screenshots/*.png
	SCREENSHOT_DIR=docs/screenshots $(PY) -m pytest tests/test_browser.py --no-cov -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .coverage .hypothesis mutants
