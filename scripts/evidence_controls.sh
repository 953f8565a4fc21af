#!/usr/bin/env bash
# Issues "controls" and "alignment": Inception (ours) under frozen SmolLM2-135M with every control arm and
# every alignment option, on the four shipped UCR 2015 datasets, 100 epochs. Re-running skips finished
# cells and resumes unfinished ones; commit finished runs with scripts/commit_finished.sh as they land.
# Cost here: about 0.1-0.2 s per training series per epoch for each LLM arm (python -m tsllm.plan prints it).
#   bash scripts/evidence_controls.sh A &  bash scripts/evidence_controls.sh B &
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=.venv/bin/python
DATA=GunPoint,ArrowHead,ItalyPowerDemand,OSULeaf
COMMON=(encoder=inception llm=smollm2_135m logger=none data.name=$DATA)

controls() {  # $1: control arms, $2: seeds
  $PY -m tsllm.train -m experiment=controls control="$1" seed="$2" "${COMMON[@]}" hydra.sweep.dir=results/runs/controls
}
align() {     # $1: align options, $2: seeds
  $PY -m tsllm.train -m mode=hybrid align="$1" seed="$2" "${COMMON[@]}" sweep_name=align \
      hydra.sweep.dir=results/runs/align
}

case "${1:-all}" in
  A) controls llm,no_llm,attention 0,1,2          # 3 seeds: the reference and the two cheapest controls
     controls random_llm,truncated,shuffle_eval 0
     align scale 0,1,2 ;;
  B) controls transformer_layer,shuffle_train,prompt_none,prompt_random,single_scale,multi_scale 0
     align prototypes 0,1,2 ;;
  all) "$0" A; "$0" B ;;
esac
# align=none is the controls' llm arm (the same config): tsllm.results pairs the align arms with it.
