# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Each installs what it needs first; the installs are skipped when already up to date.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Flower must not try to install packages at run time, and keeps its state in the project.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export FLWR_HOME := $(CURDIR)/var/flwr

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/pip check
	touch $@

# Node.js is needed only for recompiling the contracts and for anvil (tests and benchmarks).
# `npm install` rather than `npm ci`: @foundry-rs/anvil lists its other platforms' binaries as optional
# dependencies that this registry does not carry, so no lock file can satisfy `npm ci`; `npm install`
# takes exactly the locked versions and leaves package-lock.json unchanged.
contracts/node_modules/.installed: contracts/package.json contracts/package-lock.json
	cd contracts && npm install --no-audit --no-fund --loglevel=error
	touch $@

# The web apps' build tools (the wallet bundle, committed) and axe-core for their accessibility tests.
gateway/web/node_modules/.installed: gateway/web/package.json gateway/web/package-lock.json
	cd gateway/web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's Chromium for the auditor console's browser tests (Playwright never downloads a browser here).
/usr/bin/chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# The wallet speaks Chinese too: its screenshots need the glyphs.
/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-cjk

install: $(VENV)/.installed contracts/node_modules/.installed gateway/web/node_modules/.installed /usr/bin/chromium \
		/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc

demo: $(VENV)/.installed
	$(BIN)/alliance demo

# What `install` provides must be there: its tests fail rather than skip (tests/components.py).
# PostgreSQL is the machine's own service: its tests skip, saying why, where none answers.
# Two workers, one per core, each taking a whole file at a time (its module fixtures are built once).
test: export ALLIANCE_TESTS_REQUIRE ?= anvil,toolchain,chromium
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: install
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) contracts/node_modules gateway/web/node_modules var
