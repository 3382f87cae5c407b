# Install order matters here: torch first (a local wheel on our machines), then basicsr 1.4.2 without
# build isolation (its setup.py imports torch; isolation would download a second torch), then us.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv chromium test test-all demo clean

venv: $(BIN)/.converse-installed

$(BIN)/.converse-installed: setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q --no-build-isolation basicsr==1.4.2
	$(BIN)/pip install -q --no-build-isolation -e '.[test,spandrel]'
	$(BIN)/python -c 'from converse_plugin import compat; compat.install_startup_hook()'  # editable installs skip it
	-@$(MAKE) --no-print-directory chromium
	touch $@

# Debian's chromium for the report.html browser tests (playwright drives it; it never downloads a browser). Only
# as root with apt-get; never fails: without a browser those tests skip with the reason
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo 'note: no chromium (apt-get install chromium as root): the report.html browser tests will skip'

# the fast tier (every module, ~6 minutes on 2 CPU cores); test-all (25-50 minutes) adds the slow end-to-end runs,
# the long fuzz tier and the released-checkpoint reproductions (what CI runs)
test: venv
	$(BIN)/python -m pytest -q -m "not slow and not reproduction" tests

test-all: venv
	$(BIN)/python -m pytest -q tests

demo: venv
	$(BIN)/python -m converse_plugin demo

clean:
	rm -rf $(VENV) experiments results tb_logger demo_data *.egg-info
