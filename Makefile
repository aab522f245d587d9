# Two commands: `make demo` (set up, then run the whole pipeline on the embedded default) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install demo test ui app clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pcb-pipeline demo

test: $(STAMP)
	SNOWFLAKE_DISABLE_PLATFORM_DETECTION=true AWS_EC2_METADATA_DISABLED=true $(BIN)/python -m pytest -q

ui: $(STAMP)
	PCB_HOME=$${PCB_HOME:-$(CURDIR)/.pcb_home} DAGSTER_HOME=$${PCB_HOME:-$(CURDIR)/.pcb_home}/dagster $(BIN)/dagster dev -w workspace.yaml

app: $(STAMP)
	$(BIN)/pcb-pipeline app

clean:
	rm -rf .pcb_home
