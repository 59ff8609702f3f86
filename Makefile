# The two commands of the README. Both install what is missing first (scripts/setup.sh
# is idempotent and fast when everything is there).
.PHONY: setup serve test lint

setup:
	bash scripts/setup.sh

serve: setup
	.venv/bin/ttscale serve

test: setup
	.venv/bin/python -m ruff check .
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/python -m ruff check .
	.venv/bin/python -m ruff format --check .
