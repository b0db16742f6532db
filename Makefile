# shoal — `make test` and `make lab` work on a fresh Debian machine (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian packages the tests need; installed automatically when running as root.
APT_PACKAGES := python3-venv python3-pip openssl etcd-server openssh-server openssh-client iproute2 util-linux iputils-ping

.PHONY: test lab install apt lint typecheck pytest bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(MAKE) --no-print-directory apt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

# Install missing Debian packages when we are root; otherwise only say what is missing.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages (run as root or install them):$$missing"; fi; \
	fi

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy

pytest: install
	$(VENV)/bin/pytest

test: lint typecheck pytest

# For now: a local 3-agent cluster on loopback, its status, then it keeps running until Ctrl-C.
lab: install
	$(PY) -m shell.devcluster --nodes 3

bench: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/raft_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
