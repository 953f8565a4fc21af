#!/usr/bin/env bash
# Commit the evidence runs that have finished since the last commit (record, log, selected weights), so a
# session that ends loses nothing that finished. Unfinished runs stay out until they finish, unless
# --partial is given: then their record, log and resume state (ignored by git otherwise) are committed too:
# checkpoint_last.pt, so a later session on a new machine resumes them from their last epoch instead of
# epoch 1, and a text reader's features.pt, the LLM reads already made (the costly part of those runs: one
# stop lost ArrowHead's 36 TRAIN reads and most of its TEST reads). A run that has finished drops its
# committed resume state from the index.
# A checkpoint larger than TSLLM_MAX_CHECKPOINT_MB (default 10) stays on this machine only: a submission
# is refused whole past 256 MiB of diffs, and one session's align=prototypes weights (a 100 x 49152 mixing
# matrix: 24 MB selected, 71 MB with Adam's state for resume) passed that and lost the session's work.
# An unfinished run whose resume checkpoint is over the cap is committed as progress, not resume state.
# TSLLM_WEIGHTS_FOR (an extended regex, default: every run) names the finished runs whose selected weights
# (checkpoint_best.pt) travel; the others keep theirs here only. At ~2 MB a run, the 240 standalone runs
# of one evidence sweep would pass the cap by themselves, and only the runs a later analysis reloads need
# them (tsllm.diagnose: the hybrid runs and their no-LLM twins; see scripts/evidence16.sh).
#   bash scripts/commit_finished.sh "(what the runs are)"            # finished runs only
#   bash scripts/commit_finished.sh --partial "(what the runs are)"  # before a session ends
set -euo pipefail
cd "$(dirname "$0")/.."
max_bytes=$(( ${TSLLM_MAX_CHECKPOINT_MB:-10} * 1024 * 1024 ))
weights_for=${TSLLM_WEIGHTS_FOR:-.}
RESUME_STATE=(checkpoint_last.pt features.pt)  # what an unfinished run resumes from (features.pt: text readers)
has_resume_state() {  # $1: run dir
  local f
  for f in "${RESUME_STATE[@]}"; do [ -f "$1/$f" ] && return 0; done
  return 1
}
# Unstage the run's staged checkpoints over the cap, and its selected weights when TSLLM_WEIGHTS_FOR does
# not name it (a reset keeps the version already committed, if any).
drop_large_checkpoints() {  # $1: run dir
  local pt
  while IFS= read -r -d '' pt; do  # literal pathspecs: run dirs may hold [ ] (kernel-size lists)
    [[ $pt == *.pt ]] || continue
    if [ "$(stat -c %s "$pt")" -gt "$max_bytes" ]; then
      git reset -q -- ":(literal)$pt" && echo "commit_finished.sh: $pt is over ${TSLLM_MAX_CHECKPOINT_MB:-10} MB, kept here only" >&2
    elif [[ $pt == */checkpoint_best.pt ]] && ! grep -Eq -- "$weights_for" <<< "$1"; then
      git reset -q -- ":(literal)$pt"
    fi
  done < <(git diff --cached --name-only -z --diff-filter=AM -- ":(literal)$1")
}
if ! git diff --cached --quiet -- . ':!results/runs'; then
  echo "commit_finished.sh: changes outside results/runs are staged; commit or unstage them first" >&2; exit 2
fi
partial=0
if [ "${1:-}" = "--partial" ]; then partial=1; shift; fi
added=0 saved=0 logged=0
while IFS= read -r rec; do
  dir=$(dirname "$rec")
  if grep -q '"status": "finished"' "$rec"; then
    for f in "${RESUME_STATE[@]}"; do
      git ls-files --error-unmatch -- "$dir/$f" >/dev/null 2>&1 && git rm -q --cached -- "$dir/$f"
    done
    if [ -n "$(git status --porcelain -- "$dir")" ]; then
      git add -- "$dir" && drop_large_checkpoints "$dir"
      git diff --cached --quiet -- ":(literal)$dir" || added=$((added + 1))  # an oversized file alone: none
    fi
  elif [ "$partial" = 1 ] && has_resume_state "$dir"; then
    git add -- "$dir"
    for f in "${RESUME_STATE[@]}"; do
      if [ -f "$dir/$f" ]; then git add -f -- "$dir/$f"; fi
    done
    drop_large_checkpoints "$dir"
    if git diff --cached --quiet -- "${RESUME_STATE[@]/#/:(literal)$dir/}"; then
      logged=$((logged + 1))  # its record and log only: a later session restarts it from epoch 1
    else
      saved=$((saved + 1))
    fi
  fi
done < <(find results/runs -name record.json)
find results/runs -name multirun.yaml -exec git add -- {} + 2>/dev/null || true
find results/runs -path "*/.finished/*" -type f -exec git add -- {} + 2>/dev/null || true  # the skip index
if [ $((added + saved + logged)) -gt 0 ] && ! git diff --cached --quiet -- results/runs; then
  parts=()
  [ "$added" -gt 0 ] && parts+=("$added finished run(s)")
  [ "$saved" -gt 0 ] && parts+=("resume state of $saved unfinished run(s)")
  [ "$logged" -gt 0 ] && parts+=("progress of $logged unfinished run(s) whose resume checkpoint is over the cap")
  msg="Evidence: $(IFS=,; echo "${parts[*]}" | sed 's/,/, /g')"
  # The index, not a pathspec: `git commit -- PATH` would re-add a resume checkpoint just dropped.
  git commit -qm "$msg ${1:-}" && echo "committed: $msg"
fi
