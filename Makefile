# 4D>Crystal — two commands on a fresh machine:
#   make demo   create .venv, install, run the whole workflow on config/config.yaml (CPU, minutes)
#   make test   same install, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint dryrun bench pretrained pretrained-gpu gpu-check gpu-wheels clean

install: $(STAMP)

# torch is installed first and on its own so that pip takes the CPU build (torch==2.13.0) and never
# the registry's CUDA wheels; GPU installs for NERSC are described in README.md and envs/.
$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES)
	@echo "Report: results/report/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/snakemake --lint

dryrun: $(STAMP)
	$(BIN)/snakemake -n --cores $(CORES)

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# The shipped default model: the same workflow with config/pretrained.yaml on top of config/config.yaml,
# in its own working directory, then evaluate's tuned peak settings stamped into the exported file.
PRETRAIN_DIR ?= pretrained-run
pretrained: $(STAMP)
	mkdir -p $(PRETRAIN_DIR) && ln -sfn $(CURDIR)/config $(PRETRAIN_DIR)/config
	cd $(PRETRAIN_DIR) && $(CURDIR)/$(BIN)/snakemake -s $(CURDIR)/Snakefile --directory . \
	  --profile $(CURDIR)/profiles/local --cores $(CORES) \
	  --configfile config/config.yaml config/pretrained.yaml -- results/model/model.pt results/evaluation/metrics.json
	$(BIN)/fourdcrystal export-model $(PRETRAIN_DIR)/results/model/model.pt \
	  --metrics $(PRETRAIN_DIR)/results/evaluation/metrics.json --out src/fourdcrystal/data/pretrained.pt

# The same recipe for one GPU (config/pretrained_gpu.yaml on top): simulate with CuPy, 8 simulate jobs
# sharing the GPU, train on it; the model and its curves end up in $(PRETRAIN_GPU_DIR)/export/. Needs an
# environment with CUDA PyTorch and CuPy (envs/simulate.yaml + envs/train.yaml, or a GPU image plus
# `make gpu-wheels`); SNAKEMAKE and GPU_CORES choose the snakemake and the cores.
PRETRAIN_GPU_DIR ?= pretrained-gpu-run
SNAKEMAKE        ?= $(if $(wildcard $(BIN)/snakemake),$(CURDIR)/$(BIN)/snakemake,snakemake)
GPU_CORES        ?= 16
pretrained-gpu:
	mkdir -p $(PRETRAIN_GPU_DIR)/export && ln -sfn $(CURDIR)/config $(PRETRAIN_GPU_DIR)/config
	cd $(PRETRAIN_GPU_DIR) && FOURDCRYSTAL_JOBS_PER_GPU=8 $(SNAKEMAKE) -s $(CURDIR)/Snakefile --directory . \
	  --profile $(CURDIR)/profiles/local --cores $(GPU_CORES) $(PRETRAIN_GPU_FLAGS) \
	  --configfile config/config.yaml config/pretrained.yaml config/pretrained_gpu.yaml \
	  -- results/model/model.pt results/figures/loss.png results/figures/validation.png
	$(if $(filter -n,$(PRETRAIN_GPU_FLAGS)),true,cp $(PRETRAIN_GPU_DIR)/results/model/model.pt \
	  $(PRETRAIN_GPU_DIR)/results/model/metrics_*.csv $(PRETRAIN_GPU_DIR)/results/figures/loss.png \
	  $(PRETRAIN_GPU_DIR)/results/figures/validation.png $(PRETRAIN_GPU_DIR)/export/)

# GPU check (benchmarks/gpu_check.py): every GPU path run once and measured, one JSON + a table.
# On a GPU node with the project installed: `make gpu-check`; anywhere, tiny and on CPU:
# `make gpu-check GPU_CHECK_FLAGS=--smoke` (the CI test does this). Uses .venv when there is one, else
# python3 (a GPU image with the wheels of `make gpu-wheels` on PYTHONPATH).
GPU_PYTHON      ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_CHECK_OUT   ?= gpu_check.json
GPU_CHECK_FLAGS ?=
gpu-check:
	PYTHONPATH=$(CURDIR)/src$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_FLAGS)

# Python 3.12 manylinux wheels (versions from requirements/constraints.txt) of what a bare CUDA + PyTorch
# image lacks for gpu-check, into .whl/ (git-ignored); install there with
#   python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
WHEEL_PLATFORMS := $(foreach p,manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64,--platform $(p))
gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	specs=$$(for n in $$(sed 's/#.*//' requirements/gpu-carry.txt); do \
	  grep -i "^$$n==" requirements/constraints.txt || { echo "gpu-wheels: $$n is not pinned in requirements/constraints.txt" >&2; exit 1; }; \
	done) && $(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(WHEEL_PLATFORMS) -d .whl $$specs
	@du -sh .whl

clean:
	rm -rf results logs .snakemake
