# make demo: install everything into .venv and ask the default model a question.
# make test: install everything into .venv (and the optional llama.cpp engine) and run the whole test suite.
# Both install the tested versions in constraints.txt. make test-latest: the newest versions
# pyproject.toml allows, in their own venv (upgraded on every run), then the whole suite.
VENV ?= .venv
LATEST_VENV ?= .venv-latest
STAMP := $(VENV)/.gptcli-installed
LLAMACPP_STAMP := $(VENV)/.gptcli-llamacpp-installed

.PHONY: demo test test-latest test-torchvision install bench clean

demo: $(STAMP)
	$(VENV)/bin/gptcli generate "What is the capital of France?" --temperature 0

test: $(STAMP) $(LLAMACPP_STAMP)
	$(VENV)/bin/python -m pytest -q

test-latest:
	VENV=$(LATEST_VENV) GPTCLI_LATEST=1 bash scripts/install.sh
	VENV=$(LATEST_VENV) bash scripts/install-llamacpp.sh
	$(LATEST_VENV)/bin/pip freeze --exclude-editable
	$(LATEST_VENV)/bin/python -m pytest -q

# The vision tests with torchvision present (Qwen2-VL's processor needs it; `make test` runs its
# without-torchvision branch). TV_TORCH/TV_VISION: a matching pair your index has; on this project's
# x86-64 machines 2.14.1/0.29.1 (a CUDA build, which runs on the CPU too; PyPI's torchvision does not
# load beside the CPU build of torch 2.13.0).
TV_VENV ?= .venv-torchvision
TV_TORCH ?= 2.14.1
TV_VISION ?= 0.29.1
test-torchvision:
	[ -x $(TV_VENV)/bin/python ] || python3 -m venv $(TV_VENV)
	$(TV_VENV)/bin/python -m pip --disable-pip-version-check -q install "torch==$(TV_TORCH)" "torchvision==$(TV_VISION)"
	VENV=$(TV_VENV) TORCH_VERSION=$(TV_TORCH) bash scripts/install.sh
	$(TV_VENV)/bin/python -m pytest -q tests/test_vision.py tests/engine/test_mrope.py tests/server/test_serve_images.py tests/test_chat_images.py

install: $(STAMP)

# The optional llama.cpp engine: compiled once (minutes), needed by its tests.
$(LLAMACPP_STAMP): $(STAMP) scripts/install-llamacpp.sh
	VENV=$(VENV) bash scripts/install-llamacpp.sh
	touch $(LLAMACPP_STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/run.py
	$(VENV)/bin/python benchmarks/batch.py --tasks
	$(VENV)/bin/python benchmarks/finetune_vs_trainer.py

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(TV_VENV) build *.egg-info
