# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision pinned to the releases on this machine's disk; pyproject declares a range.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test lint format bench peers docs cli-docs notebooks fuzz clean

$(BIN)/cnnzoo: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(BIN)/pip install -q $(TORCH) 2>&1 | grep -v "is ignored" || true
	$(BIN)/pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import cnnzoo, torch, torchvision, lightning"
	touch $(BIN)/cnnzoo

venv: $(BIN)/cnnzoo

demo: venv
	$(BIN)/cnnzoo demo

lint: venv
	$(BIN)/ruff check src tests benchmarks scripts notebooks
	$(BIN)/ruff format --check src tests benchmarks scripts notebooks

# One pytest worker per core (each test file on one worker, so its fixtures are built once).
test: lint
	$(BIN)/python -m pytest -n auto --dist loadfile

format: venv
	$(BIN)/ruff format src tests benchmarks scripts notebooks
	$(BIN)/ruff check --fix src tests benchmarks scripts notebooks

bench: venv
	$(BIN)/python benchmarks/classification.py --help

# The documentation site (mkdocs-material, strict: a broken link fails) into site/; the CLI
# reference is generated from the typer app first, so it cannot drift.
cli-docs: venv
	$(BIN)/typer cnnzoo.cli utils docs --name cnnzoo --title "Command line" --output docs/reference/cli.md

docs: cli-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "site written to site/ (open site/index.html)"

# Every lecture notebook (notebooks/*.py, jupytext py:percent) executed on CPU in a fresh kernel,
# 300 s limit each; the executed copies, outputs included, go to build/notebooks/.
notebooks: venv
	$(BIN)/python scripts/run_notebooks.py

# Every file reader fuzzed with a large budget: the hypothesis profile "fuzz" (2000 cases per
# test, fresh randomness each time; `make test` runs the same tests with a small, fixed budget),
# then the cases each reader saw (build/fuzz-report.json). Any exception but CnnzooError fails.
fuzz: venv
	mkdir -p build
	CNNZOO_FUZZ_REPORT=build/fuzz-report.json $(BIN)/python -m pytest -m fuzz \
		--hypothesis-profile=fuzz --hypothesis-show-statistics -p no:cacheprovider \
		tests/test_fuzz_readers.py tests/test_fuzz_formats.py
	$(BIN)/python tests/fuzzing.py build/fuzz-report.json

# The peer benchmark's own environment (ultralytics, segmentation_models_pytorch): never cnnzoo's.
peers: venv
	$(BIN)/python benchmarks/peers.py setup

clean:
	rm -rf $(VENV) runs .pytest_cache
