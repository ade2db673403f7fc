# contiv-sdn: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install test demo demo-down bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py scripts/install.sh
	bash scripts/install.sh
	touch $@

test: install
	$(VENV)/bin/trial $(TRIAL_ARGS) tests

demo: install
	$(PY) -m contiv_sdn.demo

demo-down: install
	$(PY) -m contiv_sdn.demo --down

# Benchmarks print ratios against a reference measured in the same run (never asserted in tests).
bench: install
	$(PY) bench/api.py
	$(PY) bench/flowpush.py
	$(PY) bench/packetin.py

clean:
	-$(PY) -m contiv_sdn.demo --down 2>/dev/null
	rm -rf $(VENV) _trial_temp* build *.egg-info
