#!/usr/bin/env bash
# Issue "diagnostics": the hybrid evidence runs that the full diagnostics read, on the four shipped UCR
# 2015 datasets, seed 0, 100 epochs: Inception (ours) and study_inception, each under the pretrained and
# the random-init frozen SmolLM2-135M. Ours reuses the controls sweep's cells (control=llm, random_llm),
# study_inception the study_honest sweep's, so no run is duplicated. Re-running skips finished cells.
# Smallest datasets first, so that an interrupted session still leaves complete pairs.
#   bash scripts/evidence_diagnostics.sh A &  bash scripts/evidence_diagnostics.sh B &
#   bash scripts/evidence_diagnostics.sh diagnose     # full diagnostics of every finished hybrid cell
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=.venv/bin/python
DATA=${DATA:-ArrowHead,GunPoint,ItalyPowerDemand,OSULeaf}  # DATA=... narrows it (diagnose too)

ours() {   # $1: control arm (llm = pretrained, random_llm = random-init); $2: datasets
  $PY -m tsllm.train -m experiment=controls control="$1" encoder=inception seed=0 data.name="$2" \
      llm=smollm2_135m logger=none hydra.sweep.dir=results/runs/controls
}
study() {  # $1: llm.weights (pretrained | random); $2: datasets
  local w=(); [ "$1" = random ] && w=(llm.weights=random)
  $PY -m tsllm.train -m encoder=study_inception mode=hybrid data.name="$2" llm=smollm2_135m logger=none \
      seed=0 "${w[@]}" sweep_name=study_honest hydra.sweep.dir=results/runs/study_honest
}

case "${1:-all}" in
  A) ours llm $DATA
     study random $DATA ;;
  B) study pretrained OSULeaf
     ours random_llm $DATA ;;
  diagnose)  # per dataset, so that each hybrid is paired with its standalone twin for CKA (and memory stays small)
     for ds in ${DATA//,/ }; do
       dirs=()
       for d in results/runs/controls/control={llm,random_llm,no_llm},data.name=$ds,encoder=inception,*seed=0 \
                results/runs/study_honest/data.name=$ds,*; do
         [ -f "$d/record.json" ] && grep -q '"status": "finished"' "$d/record.json" && dirs+=("$d")
       done
       [ ${#dirs[@]} -eq 0 ] || $PY -m tsllm.diagnose --level full "${dirs[@]}"
     done
     # The tidy diagnostics table that notebook 04 and LOG.md read.
     $PY -c "import pandas as pd; from tsllm.diagnostics import diagnostics_table as t
pd.concat([t('results/runs/controls'), t('results/runs/study_honest')]).to_csv('results/diagnostics.csv', index=False)" ;;
  all) "$0" A; "$0" B; "$0" diagnose ;;
esac
