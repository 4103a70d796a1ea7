# The two set-up commands of the README. Both create .venv/ in the repository root if it is
# missing and install the project from pyproject.toml (`make test` with its test extras),
# every package at the exact version in requirements/lock.txt (what the tests passed with).
# `make test-latest` tries the newest releases instead, in .venv-latest/, to see drift on
# purpose; `make lock` rewrites the lock from a fresh resolve.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements/lock.txt
PYTEST_ARGS ?=

.PHONY: demo test test-fast test-latest lock fuzz bench fixtures lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) pip

# Reinstall when pyproject.toml or the lock changes (the stamp records the last install).
$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(LOCK) $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[test]'
	$(BIN)/python -m pip check
	@touch $@

DEMO_OUT := demo-out
WT := $(BIN)/wtransplant

# The main job end to end on bundled fixtures; outputs go to demo-out/.
demo: $(VENV)/.installed
	@mkdir -p $(DEMO_OUT)
	@echo "== inspect: what is in these files and who wrote them"
	$(WT) inspect fixtures/torch/torch_cnn.h5
	$(WT) inspect fixtures/octave/octave_mlp.h5
	$(WT) inspect --json fixtures/matlab/matlab73_mlp.mat > $(DEMO_OUT)/matlab73_mlp.inspect.json
	$(WT) inspect --stats --filter '*kernel*' fixtures/keras2/k2_cnn_model.h5
	@echo "== spec: draft a spec from what the file implies"
	$(WT) spec fixtures/octave/octave_mlp.h5 -o $(DEMO_OUT)/octave_mlp.yaml
	@echo "== rebuild: the Octave MLP from the draft, checked against Octave's own outputs"
	$(WT) rebuild --spec $(DEMO_OUT)/octave_mlp.yaml -o $(DEMO_OUT)/octave_mlp.keras --report $(DEMO_OUT)/octave_mlp.report.json
	@echo "== rebuild: a PyTorch CNN (NCHW, BatchNorm, Flatten into Linear)"
	$(WT) rebuild --spec fixtures/specs/torch_cnn.yaml -o $(DEMO_OUT)/torch_cnn.keras --report $(DEMO_OUT)/torch_cnn.report.json
	@echo "== rebuild: a Keras 2 GRU/LSTM model that Keras 3's load_model refuses, no spec"
	$(WT) rebuild fixtures/keras2/k2_rnn_model.h5 -o $(DEMO_OUT)/k2_rnn_model.keras --inputs fixtures/keras2/k2_rnn_model.io.npz:x --expected fixtures/keras2/k2_rnn_model.io.npz:y
	@echo "== finetune: the Keras 2 digits CNN (trained on digits 0-4), rebuilt, gets a new 10-way head for all ten digits"
	$(WT) rebuild fixtures/keras2/k2_digits_model.h5 -o $(DEMO_OUT)/k2_digits_model.keras
	$(WT) finetune $(DEMO_OUT)/k2_digits_model.keras --data fixtures/data/digits.h5 --new-head 10 --trainable-from features --epochs 4 --lr 3e-3 --seed 1 -o $(DEMO_OUT)/digits10.keras
	@echo "== export: the rebuilt CNN to ONNX, reloaded and checked in onnxruntime"
	$(WT) export $(DEMO_OUT)/torch_cnn.keras --format onnx -o $(DEMO_OUT)/torch_cnn.onnx --provenance $(DEMO_OUT)/torch_cnn.report.json --report $(DEMO_OUT)/torch_cnn.export.json
	@echo "== verify: the ONNX file against PyTorch's own outputs (inputs stored NCHW)"
	$(WT) verify $(DEMO_OUT)/torch_cnn.onnx --inputs fixtures/torch/torch_cnn.io.npz:x --expected fixtures/torch/torch_cnn.io.npz:y --input-layout nchw --plot $(DEMO_OUT)/torch_cnn.verify.png
	@echo "== export: the fine-tuned digits model to ONNX, checked in onnxruntime; it still names the original Keras 2 weights (sha256)"
	$(WT) export $(DEMO_OUT)/digits10.keras --format onnx -o $(DEMO_OUT)/digits10.onnx
	@echo "demo finished: outputs in $(DEMO_OUT)/"

# Everything but the nightly-size fuzz run; `make test-fast` skips the slow tests too.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 -m "not nightly" $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 -m "not nightly and not slow" $(PYTEST_ARGS)

# Every benchmark, each against a baseline measured in the same run -> bench/RESULTS.md
bench: $(VENV)/.installed
	$(BIN)/python bench/run_all.py

# Nightly-style fuzzing: thousands of mutated fixture files through inspect, spec, rebuild,
# and as many generated HDF5 trees, Keras configs, specs and zip layouts (a quarter each);
# the h5py-free walks against the h5py walk (tests/leanfuzz.py): for the ctypes walk a
# quarter as many generated files and as many mutated ones, for the pure-Python reader
# (milliseconds a case) as many of each as FUZZ_CASES.
FUZZ_CASES ?= 5000
fuzz: $(VENV)/.installed-test
	WT_FUZZ_NIGHTLY=1 WT_FUZZ_CASES=$(FUZZ_CASES) WT_FUZZ_REBUILD_CASES=500 \
		WT_FUZZ_STRUCT_CASES=$$(( $(FUZZ_CASES) / 4 )) \
		WT_LEANFUZZ_CASES=$$(( $(FUZZ_CASES) / 4 )) \
		WT_PARSEFUZZ_CASES=$(FUZZ_CASES) \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py \
		tests/test_fuzz_structure.py tests/test_h5lean_fuzz.py

# The suite against the newest releases of every dependency (no lock), in its own venv.
test-latest:
	test -x .venv-latest/bin/python || $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --upgrade pip
	.venv-latest/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[test]'
	.venv-latest/bin/python -m pip check
	.venv-latest/bin/python -m pip freeze --exclude-editable | diff $(LOCK) - || true
	.venv-latest/bin/python -m pytest -q -n 2 -m "not nightly" $(PYTEST_ARGS)

# Rewrite the lock from a fresh resolve of pyproject.toml (test extras included); run the
# suite (make test) before committing the new lock.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -e '.[test]'
	.venv-lock/bin/python -m pip check
	( echo "# Exact versions that make test passed with (Python 3.11, Linux x86-64)."; \
	  echo "# Used as pip constraints by the Makefile; regenerate with make lock."; \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable \
	    | grep -v -E '^(wtransplant|setuptools|wheel)[=@ ]' ) > $(LOCK)
	rm -rf .venv-lock

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

# Regenerate the committed fixtures with the real writers (needs PyTorch, tf_keras,
# hdf5storage and GNU Octave; see fixtures/README.md). Tests never need this.
fixtures:
	$(MAKE) -C fixtures all

clean:
	rm -rf $(VENV) .venv-latest .venv-lock .pytest_cache .ruff_cache *.egg-info
