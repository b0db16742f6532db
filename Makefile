# shoal — `make test` and `make lab` work on a fresh Debian machine (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian packages the tests need; installed automatically when running as root.
APT_PACKAGES := python3-venv python3-pip openssl etcd-server openssh-server openssh-client iproute2 util-linux iputils-ping

.PHONY: test lab devcluster install apt lint typecheck pytest bench clean

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

# A 3-machine lab (network namespaces with real sshd, as root), made a cluster over SSH, then
# the shell (the REPL) on it. Safe to repeat: an existing lab and cluster are left as they are.
lab: install
	@$(VENV)/bin/shoal lab status >/dev/null 2>&1 || $(VENV)/bin/shoal lab up
	$(VENV)/bin/shoal cluster init
	$(VENV)/bin/shoal cluster status
	@echo
	@echo "the cluster runs until 'shoal lab down'. In the shell, try:"
	@echo "  machines  ·  kv put /hello world  ·  exec -b @all -- uname -r  ·  help"
	@echo "and from another terminal: .venv/bin/shoal lab kill node1"
	@if [ -t 0 ] && [ -t 1 ]; then $(VENV)/bin/shoal; fi

# Three agents on loopback without namespaces or sshd (no root needed).
devcluster: install
	$(PY) -m shell.devcluster --nodes 3

bench: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/raft_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
