# The two commands of the README. Both install what is missing first (scripts/setup.sh
# is idempotent and fast when everything is there).
.PHONY: setup serve test lint bench-smoke

setup:
	bash scripts/setup.sh

serve: setup
	.venv/bin/ttscale serve

test: setup
	.venv/bin/python -m ruff check .
	.venv/bin/lint-imports
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/python -m ruff check .
	.venv/bin/lint-imports
	.venv/bin/python -m ruff format --check .

# The CPU smoke benchmark: SmolLM2 on the first 20 GSM8K problems, two strategies, N in
# 1 and 4. Resumes if interrupted; writes bench-out/gsm8k-smoke/report.md and plots.
bench-smoke: setup
	.venv/bin/ttscale bench run --dataset gsm8k --limit 20 \
		--strategy self_consistency --strategy inverse_entropy --n 1,4 \
		--max-tokens 256 --out bench-out/gsm8k-smoke
