# pop-router: `make demo` brings up the default lab, `make test` runs every test.
# Every target installs what it needs when it is missing (Debian packages, .venv).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
POP   := $(VENV)/bin/pop-router
LAB   := containerlab/pop-basic.clab.yml
DEBS  := frr bird2 iproute2 iputils-ping tcpdump nftables util-linux procps clang llvm libbpf-dev prometheus stayrtr pypy3 pypy3-venv
XDP_OBJ := build/pop_xdp.o build/xdp_pass.o build/xdp_gen.o
STAMP := $(VENV)/.installed
PYPY_VENV := .venv-pypy
PYPY_STAMP := $(PYPY_VENV)/.installed

.PHONY: demo demo-down test unit integration lint deps debs bench clean

deps: debs $(STAMP) $(PYPY_STAMP) $(XDP_OBJ)

# The XDP program is built here, never committed (clang -target bpf, headers from libbpf-dev).
BPF_CC = mkdir -p build && clang -O2 -g -Wall -target bpf -I/usr/include/$$(uname -m)-linux-gnu
build/%.o: fib/xdp/%.c
	$(BPF_CC) -c $< -o $@

# The XDP benchmark's generators and sink: their own object, so the production one carries none of
# them. It includes the production source (the generator forwards with pop_xdp's own code).
build/xdp_gen.o: benchmarks/xdp_gen.c fib/xdp/pop_xdp.c
	$(BPF_CC) -Ifib/xdp -c $< -o $@

debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# ExaBGP under PyPy (issue 12: ~3x faster on a full table): the same ExaBGP version as the CPython
# venv's, linked as .venv/bin/exabgp-pypy, which `exabgp.interpreter: auto` prefers. Skipped with a
# message where there is no pypy3; the daemon then runs ExaBGP on CPython and says so in its log.
$(PYPY_STAMP): $(STAMP)
	@if command -v pypy3 >/dev/null; then \
	  ver=$$($(PY) -c 'import importlib.metadata as m; print(m.version("exabgp"))'); \
	  test -x $(PYPY_VENV)/bin/python || pypy3 -m venv $(PYPY_VENV); \
	  $(PYPY_VENV)/bin/python -m pip install -q "exabgp==$$ver" && \
	  ln -sf $(abspath $(PYPY_VENV))/bin/exabgp $(VENV)/bin/exabgp-pypy && touch $(PYPY_STAMP); \
	else echo "pypy3 not found: ExaBGP will run on CPython"; fi

demo: deps
	$(PY) -m labs.demo $(LAB)

demo-down: deps
	$(POP) lab down $(LAB)

lint: deps
	$(VENV)/bin/ruff check .

unit: deps
	$(PY) -m pytest -q tests/unit

integration: deps
	$(PY) -m pytest -q tests/integration

test: deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests

bench: deps
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/bfd.py
	$(PY) benchmarks/fib.py
	$(PY) benchmarks/failover.py
	$(PY) benchmarks/xdp.py

clean:
	rm -rf $(VENV) $(PYPY_VENV) build *.egg-info
