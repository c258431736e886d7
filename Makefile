# Two commands a new user needs: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-faults test-duplicate bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/arcod serve --config config/arcod.toml

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

# SPEC §9, run by .ci/run after `make test` (docs/reliability.md): a bounded crash campaign
# (every failpoint crashes the daemon at least once, then seeded random crashes and SIGKILLs),
# and the rerun and backfill end-to-end tests with every actor message delivered twice.
test-faults: $(STAMP)
	$(BIN)/python -m tests.faults.campaign --cycles 35 --seed ci --max-seconds 300

# Duplicate mode runs on asyncio only, to keep CI under 10 minutes on 2 cores: delivery
# duplication lives in the backend-neutral actor runtime, and trio is covered by `make test`.
test-duplicate: $(STAMP)
	ARCOD_TEST_DUPLICATE=1 $(BIN)/python -m pytest -q -p no:cacheprovider -k "not trio" tests/e2e/test_reruns.py tests/e2e/test_backfills.py

clean:
	rm -rf $(VENV) config/.arcod .pytest_cache build *.egg-info
