#!/usr/bin/env bash
# Issue "reproduce the study": study_inception under the study's protocol and under the honest default,
# standalone and hybrid (SmolLM2-135M), and the text arm, on the four shipped UCR 2015 datasets, seed 0.
# Re-running skips finished cells and resumes unfinished ones. Queues of one core each (C joined later):
#   bash scripts/evidence_study.sh A &  bash scripts/evidence_study.sh B &  bash scripts/evidence_study.sh C &
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=.venv/bin/python
DATA=GunPoint,ArrowHead,ItalyPowerDemand,OSULeaf
COMMON=(llm=smollm2_135m logger=none seed=0)

honest() {  # the honest default: validation-selected, z-normalised, Adam; our prompt and one-token suffix
  $PY -m tsllm.train -m encoder=study_inception mode="$1" data.name="$2" "${COMMON[@]}" \
      sweep_name=study_honest hydra.sweep.dir=results/runs/study_honest
}
study() {   # experiment=study_reproduction: the study's system, protocol and both of its reported figures
  $PY -m tsllm.train -m experiment=study_reproduction mode="$1" data.name="$2" "${COMMON[@]}" \
      hydra.sweep.dir=results/runs/study_reproduction
}
text() {    # the LLM reading the series as text: a linear probe on its last state, and in-context labels
  $PY -m tsllm.train -m mode=text reader="$1" data.name="$2" "${COMMON[@]}" \
      sweep_name=text hydra.sweep.dir=results/runs/text
}

case "${1:-all}" in
  A) honest hybrid GunPoint,ArrowHead,ItalyPowerDemand
     study study_hybrid GunPoint,ArrowHead
     honest hybrid OSULeaf
     study study_hybrid OSULeaf ;;
  B) honest standalone $DATA
     study study_standalone $DATA
     text text_probe $DATA
     study study_hybrid ItalyPowerDemand ;;
  C) text text_icl $DATA ;;
  all) "$0" A; "$0" B; "$0" C ;;
esac
