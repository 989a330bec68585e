# telemetryd developer targets. `make run` sets everything up and runs the daemon;
# `make test` sets everything up and runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# System tools the tests and benchmarks drive for real.
# chromium: the HTML report's tests load the page in it (headless, through Playwright).
SYSTEM_TOOLS := socat nc rsyslogd systemd-analyze systemd-socket-activate chromium
APT_PACKAGES := socat netcat-openbsd rsyslog systemd chromium

.DEFAULT_GOAL := check
.PHONY: check install system-deps bench-deps run test lint fmt bench stress schema docs clean

check: test lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,report]'
	# Bytecode up front: `telemetryctl send` must not compile its modules on every
	# run where PYTHONDONTWRITEBYTECODE is set.
	$(BIN)/python -m compileall -q src
	touch $(STAMP)

install: $(STAMP)

# Installs the system tools (as root with apt-get, else with sudo) when any is missing.
system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || [ -x /usr/sbin/$$t ] || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system tools:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

run: install
	$(BIN)/telemetryd

test: install system-deps
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: install system-deps bench-deps
	$(BIN)/python -m bench

# The syslog-ng baseline: it conflicts with rsyslog as a Debian package, so its .debs are
# fetched (apt-get download) and unpacked into bench/.deps/, not installed. rsyslog's
# mmjsonparse baseline needs nothing more: Debian ships it in the rsyslog package.
# The ccusage baseline (`report daily`): npm into bench/.deps/ccusage/; ccusage 20 (a
# command per agent, for the token parity): bench/.deps/ccusage20/.
bench-deps: install
	$(BIN)/python -m bench.syslogng install
	$(BIN)/python -m bench.reports install
	$(BIN)/python -m bench.parity install

# The kill -9 rounds, and the property-based tests with many more examples.
stress: install system-deps
	TELEMETRYD_STRESS_ROUNDS=200 $(BIN)/pytest tests/test_reliability.py
	HYPOTHESIS_PROFILE=stress $(BIN)/pytest -m properties --timeout 3600

schema: install
	$(BIN)/python -m telemetryd.schema schemas

# Regenerate what is generated from the code (tests fail when these drift).
docs: schema
	$(BIN)/python -m telemetryd.client.clidoc > docs/cli.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
