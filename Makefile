# 4D>Crystal — two commands on a fresh machine:
#   make demo   create .venv, install, run the whole workflow on config/config.yaml (CPU, minutes)
#   make test   same install, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint dryrun bench pretrained clean

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

clean:
	rm -rf results logs .snakemake
