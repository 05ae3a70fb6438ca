# Veche: the commands the README names.
#   make run    start a server on http://127.0.0.1:8080 with embedded defaults
#   make test   install what the tests need and run the whole suite
#   make check  lint, format check, type check, generated files fresh
#   make bench  benchmarks under tests/bench (not part of `make test`)
#   make test-docker  the image and compose file with a private Docker engine (as root)
#   make screenshots  the README's screenshots, taken from a real call (docs/screenshots)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Debian packages the test suite needs; `make test` installs the missing ones when run as root.
TEST_DEBIAN_PACKAGES ?= iproute2 iptables chromium firefox-esr coturn redis-server

.PHONY: run test test-docker check check-js bench schema screenshots system-packages node-tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV) && \
		sh scripts/debian-packages python3-venv && $(PYTHON) -m venv $(VENV); }

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	@touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/veche serve

system-packages:
	@sh scripts/debian-packages $(TEST_DEBIAN_PACKAGES)

# npm tools under $(VENV)/tools (puppeteer-core for Firefox, TypeScript); no browser download.
node-tools: | $(BIN)/python
	@sh scripts/node-tools $(VENV)/tools

# The suite runs inside a private network namespace (scripts/netns-run) so that WebRTC tests use
# their own addresses and nothing can leave the machine.
test: $(VENV)/.installed-test system-packages node-tools
	sh scripts/netns-run $(BIN)/python -m pytest

check: $(VENV)/.installed-test
	$(BIN)/ruff check server tests scripts
	$(BIN)/ruff format --check server tests scripts
	$(BIN)/mypy server
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit/test_docs.py -k layers
	$(BIN)/python -m veche.schema --check
	@for file in docker/compose*.yaml; do \
		echo "docker-compose -f $$file config -q"; \
		$(BIN)/docker-compose -f $$file --env-file docker/.env.example config -q || exit 1; \
		$(BIN)/docker-compose -f $$file --env-file docker/.env.example --profile cluster \
			config -q || exit 1; done
	$(BIN)/hadolint --failure-threshold warning docker/Dockerfile
	@$(MAKE) --no-print-directory check-js

# The browser client's JSDoc types, checked by TypeScript (strict, no emit) where npm exists.
TSC := $(VENV)/tools/node_modules/.bin/tsc
check-js:
	@if command -v npm >/dev/null 2>&1; then \
		sh scripts/node-tools $(VENV)/tools; \
		echo "$(TSC) -p web/jsconfig.json"; $(TSC) -p web/jsconfig.json; \
	else echo "note: npm not found, the browser client's types were not checked"; fi

# The Docker image and compose file, with a private Docker engine (minutes; needs root). The
# image is built outside the test namespace (it needs the package mirrors), then used inside.
DOCKER_TEST_DEBIAN_PACKAGES ?= docker.io debootstrap
test-docker: $(VENV)/.installed-test system-packages
	@sh scripts/debian-packages $(DOCKER_TEST_DEBIAN_PACKAGES)
	$(BIN)/python tests/docker/build_image.py
	sh scripts/netns-run $(BIN)/python -m pytest -m docker tests/docker

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,dev,bench]'
	@touch $@ $(VENV)/.installed-test $(VENV)/.installed-run

bench: $(VENV)/.installed-bench system-packages
	@set -e; for bench in tests/bench/bench_*.py; do \
		echo "== $$bench"; sh scripts/netns-run $(BIN)/python $$bench; done

# The README's screenshots: a real call (Chromium and aiortc participants) photographed on a
# desktop and a phone, into docs/screenshots.
screenshots: $(VENV)/.installed-test system-packages
	sh scripts/netns-run $(BIN)/python scripts/screenshots.py docs/screenshots

schema: $(VENV)/.installed-run
	$(BIN)/python -m veche.schema

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
