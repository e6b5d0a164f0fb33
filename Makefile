# The everyday commands (each is also a script in scripts/).
.PHONY: setup demo test lint bench

setup:
	scripts/setup

demo:
	scripts/demo

test:
	scripts/test

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy && .venv/bin/lint-imports

bench: setup
	.venv/bin/python -m bench.engine
	.venv/bin/python -m bench.run
	.venv/bin/python -m bench.portal
