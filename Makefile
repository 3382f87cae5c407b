# Install order matters here: torch first (a local wheel on our machines), then basicsr 1.4.2 without
# build isolation (its setup.py imports torch; isolation would download a second torch), then us.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv test test-all demo clean

venv: $(BIN)/.converse-installed

$(BIN)/.converse-installed: setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q --no-build-isolation basicsr==1.4.2
	$(BIN)/pip install -q --no-build-isolation -e '.[test,spandrel]'
	$(BIN)/python -c 'from converse_plugin import compat; compat.install_startup_hook()'  # editable installs skip it
	touch $@

# the fast tier (every module, ~10 minutes on 2 CPU cores); test-all (~25 minutes) adds the slow end-to-end runs,
# the long fuzz tier and the released-checkpoint reproductions (what CI runs)
test: venv
	$(BIN)/python -m pytest -q -m "not slow and not reproduction" tests

test-all: venv
	$(BIN)/python -m pytest -q tests

demo: venv
	$(BIN)/python -m converse_plugin demo

clean:
	rm -rf $(VENV) experiments results tb_logger demo_data *.egg-info
