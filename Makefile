# The two commands of the README (`make serve`, `make test`) and the inner loop
# (`make test-fast`). Each installs what is missing first (scripts/setup.sh is idempotent
# and fast when everything is there).
.PHONY: setup serve test test-fast checks lint docs bench-smoke

setup:
	bash scripts/setup.sh

serve: setup
	.venv/bin/ttscale serve

# Everything: what CI runs (.ci/run).
test: setup checks
	.venv/bin/python -m pytest

# The inner loop: the same checks and the tests that start neither vLLM nor another
# program (markers assigned from fixture use, see tests/support/lanes.py).
test-fast: setup checks
	.venv/bin/python -m pytest -m "not vllm and not subprocess"

# Lint, the import contract (layers point down only) and the docs site, built strict.
checks:
	.venv/bin/python -m ruff check .
	.venv/bin/lint-imports
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet

lint: setup
	.venv/bin/python -m ruff check .
	.venv/bin/lint-imports
	.venv/bin/python -m ruff format --check .

# The documentation site on http://127.0.0.1:8001, rebuilt as pages change.
docs: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs serve --dev-addr 127.0.0.1:8001

# The CPU smoke benchmark: SmolLM2 on the first 20 GSM8K problems, two strategies, N in
# 1 and 4. Resumes if interrupted; writes bench-out/gsm8k-smoke/report.md and plots.
bench-smoke: setup
	.venv/bin/ttscale bench run --dataset gsm8k --limit 20 \
		--strategy self_consistency --strategy inverse_entropy --n 1,4 \
		--max-tokens 256 --out bench-out/gsm8k-smoke
