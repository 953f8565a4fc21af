#!/usr/bin/env bash
# Issue "evidence at scale": the study's question on the 16 UCR 2015 datasets of datasets=evidence16
# (all <= 110 TRAIN series), 100 epochs at the study's settings, train.selection=min_train_loss (all of
# TRAIN, the epoch of least training loss: the published dl-4-tsc baselines' rule), TEST used once.
# Every arm is a conf/control preset of one sweep (results/runs/evidence16), so tsllm.results pairs them.
# Re-running skips finished cells and resumes unfinished ones; commit them with `bash scripts/evidence16.sh commit`.
#   bash scripts/evidence16.sh plan1 | plan2   # python -m tsllm.plan of each tier at TFLOPS (default 0.063 TFLOP/s,
#                                              the fp32 matmul rate measured on this CPU idle; README, tsllm.plan)
#   bash scripts/evidence16.sh A &  bash scripts/evidence16.sh B &      # Tier 1, one core each
#   bash scripts/evidence16.sh tier2 [OVERRIDES]                         # Tier 2, after Tier 1; two cores split
#     it by datasets, e.g. tier2 'datasets.names=[Ham,Plane]' & tier2 'datasets.names=[Meat,CBF]' &
#   ALIGN=prototypes bash scripts/evidence16.sh align | plan_align     # issue "alignment": its arm, 3 seeds
#   bash scripts/evidence16.sh commit [--partial] "(msg)"  # commit_finished.sh: records, logs, diagnostics
#   bash scripts/evidence16.sh wall     # each tier's plan beside its real wall time in the records (LOG.md;
#                                         minutes: it plans every tier again)
#   bash scripts/evidence16.sh report   # every table and figure, from the records only: results/evidence16/
#                                         (report.md, tidy, figures/) and README's generated tables
set -euo pipefail
cd "${EVIDENCE16_ROOT:-$(dirname "$0")/..}"
# bash reads a script while it runs it, so an edit to this file would reach a queue mid-run: run a copy.
if [ -z "${EVIDENCE16_ROOT:-}" ]; then
  copy=$(mktemp "${TMPDIR:-/tmp}/evidence16.XXXXXX.sh")
  cp "$0" "$copy"
  EVIDENCE16_ROOT=$PWD exec bash "$copy" "$@"
fi
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
VERB=(-m tsllm.train)
COMMON=(datasets=evidence16 train.selection=min_train_loss llm=smollm2_135m logger=none sweep_name=evidence16
        hydra.sweep.dir=results/runs/evidence16)

arm() {   # $1: control arm(s), $2: encoder(s), $3: seed(s), then any further overrides
  $PY "${VERB[@]}" -m experiment=controls control="$1" encoder="$2" seed="$3" "${COMMON[@]}" "${@:4}"
}
text() {  # $1: text reader (text_probe | text_icl), $2: seed(s), then any further overrides
  $PY "${VERB[@]}" -m mode=text reader="$1" seed="$2" "${COMMON[@]}" "${@:3}"
}
OURS=mlp,cnn,inception,resnet,transformer
# A queue runs for hours, and a run imports some modules only when it gets to them (diagnostics, after
# training): an edit to src/ or conf/ under a queue, or a checkout, reached five finished CNN runs that way
# and failed them. So the verbs that launch runs take the code of HEAD from a worktree of its own and run
# that; each record's git sha then names that commit, clean. Uncommitted changes do not run: commit first.
frozen_code() {
  local sha dir
  sha=$(git rev-parse HEAD)
  dir=.venv/queues/${sha:0:12}
  [ -d "$dir" ] || git worktree add -q --detach "$dir" "$sha"
  export PYTHONPATH="$PWD/$dir/src${PYTHONPATH:+:$PYTHONPATH}"
  echo "evidence16: running the code of commit ${sha:0:12} from $dir" >&2
}
tier_total() {  # $1: tier name; passes the plans through and adds up their "total:" lines (planned hours, and
                # with --records the finished runs and their real hours)
  awk -v tier="$1" '{ print } /^total:/ { for (i = 2; i <= NF; i++) {
      if ($i == "hours" && $(i + 1) == "at") h += $(i - 1)
      if ($i == "finished,") { f += $(i - 3); n += $(i - 1) }
      if ($i == "real" && $(i + 1) == "hours") { r += $(i - 1); real = 1 }
      if ($i == "partial:") { s = $(i - 1); sub(/^\(/, "", s); res += s } } }
    END { printf "%s total: %.2f hours at the rate above (the plans above, added)", tier, h
          if (real) printf "; %d of %d runs finished, %.2f real hours in their records (%d partial: a lower bound)", f, n, r, res
          print "" }'
}

tier1_A() {  # the long pole first: each Inception hybrid seed is ~2.3 h of one core
  arm llm inception 0
  arm random_llm inception 0
  arm llm inception 1
}
tier1_B() {  # the cheap standalone arms first, so the baseline side of every pair lands early
  arm no_llm $OURS 0,1,2
  arm attention inception 0,1,2
  arm no_llm,llm study_inception 0
  text text_probe 0
  arm llm inception 2
}
align_tier() {  # the alignment option chosen on the shipped datasets, paired with Tier 1's plain LLM arm
  arm llm inception 0,1,2 align="${ALIGN:?set ALIGN to an align option, e.g. ALIGN=prototypes}"
}
tier2() {  # any arguments are further overrides of every sweep; one encoder at a time, so a session that
           # ends early leaves whole encoders finished rather than every encoder part-done
  for encoder in mlp cnn resnet transformer; do arm llm "$encoder" 0 "$@"; done
  arm truncated inception 0 "$@"
  text text_icl 0 "$@"
}

case "${1:-}" in
  A) frozen_code; tier1_A ;;
  B) frozen_code; tier1_B ;;
  tier2) shift; frozen_code; tier2 "$@" ;;
  plan1) VERB=(-m tsllm.plan --tflops "${TFLOPS:-0.063}"); { tier1_A; tier1_B; } | tier_total "Tier 1" ;;
  plan2) VERB=(-m tsllm.plan --tflops "${TFLOPS:-0.063}"); tier2 | tier_total "Tier 2" ;;
  align) frozen_code; align_tier ;;
  plan_align) VERB=(-m tsllm.plan --tflops "${TFLOPS:-0.063}"); align_tier | tier_total "align=$ALIGN" ;;
  commit) shift; bash scripts/commit_finished.sh "$@"
    # New records change README's generated tables; committing them alone fails CI's freshness test, so say it.
    $PY -m tsllm.results.readme --check > /dev/null ||
      echo "evidence16: README's generated tables no longer match the records: run 'bash scripts/evidence16.sh report'," \
           "update the prose numbers and commit README.md before pushing" >&2 ;;
  report)
    $PY -m tsllm.results results/runs --sweep evidence16 --reference --cost --out results/evidence16 > /dev/null
    $PY scripts/render_notebooks.py --tidy results/evidence16/tidy.csv --figures results/evidence16/figures --evidence 01 03
    $PY -m tsllm.results.readme ;;
  wall)  # each tier's plan beside the real wall time of its finished runs, from the same tier definitions
    VERB=(-m tsllm.plan --tflops "${TFLOPS:-0.063}" --records results/runs/evidence16)
    { tier1_A; tier1_B; } | tier_total "Tier 1"; tier2 | tier_total "Tier 2" ;;
  diagnose)  # Tier 2: full diagnostics of Inception's hybrid, seed 0 (basic ones are in every hybrid record);
             # it reloads each run's checkpoint_best.pt, which is not committed: on another machine, retrain first
    frozen_code
    for d in results/runs/evidence16/control=llm,data.name=*,encoder=inception,*seed=0,*; do  # with its no-LLM twin (CKA)
      $PY -m tsllm.diagnose --level full "$d" "${d/control=llm,/control=no_llm,}"
    done ;;
  *) echo "usage: scripts/evidence16.sh A | B | tier2 | align | commit | report | plan1 | plan2 | plan_align | wall | diagnose" >&2; exit 2 ;;
esac
