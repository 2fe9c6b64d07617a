# make demo: install everything into .venv and ask the default model a question.
# make test: install everything into .venv and run the whole test suite.
VENV ?= .venv
STAMP := $(VENV)/.gptcli-installed

.PHONY: demo test install bench clean

demo: $(STAMP)
	$(VENV)/bin/gptcli generate "What is the capital of France?" --temperature 0

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/run.py
	$(VENV)/bin/python benchmarks/batch.py --tasks
	$(VENV)/bin/python benchmarks/finetune_vs_trainer.py

clean:
	rm -rf $(VENV) build *.egg-info
