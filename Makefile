# Two commands do all set-up on a fresh machine:
#   make demo   - the whole chain on the embedded default data (SimMIM -> CLS -> segmentation -> evaluation)
#   make test   - the test suite (.ci/run calls exactly this)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.viny-installed

.PHONY: demo test venv lint bench clean browser

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: pip takes the copy on this machine's disk and never pulls another build.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/viny demo $(DEMO_ARGS)

# The explorer's tests drive a real headless Chromium (Debian's chromium + chromium-driver).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "warning: could not install chromium + chromium-driver (needs root and Debian's apt); the browser tests will be skipped (or fail under CI)"

test: $(STAMP) browser
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check viny_probe tests benchmarks
	$(VENV)/bin/ruff format --check viny_probe tests benchmarks

bench: $(STAMP)
	$(VENV)/bin/viny bench

clean:
	rm -rf viny-demo .pytest_cache
