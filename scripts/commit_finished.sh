#!/usr/bin/env bash
# Commit the evidence runs that have finished since the last commit (record, log, diagnostics), so a
# session that ends loses nothing that finished. The weights of a finished run never travel: they are
# recomputed from its record (same config and seed, the same numbers on CPU), and a clone that carried
# every run's weights weighed 810 MB. Unfinished runs stay out until they finish, unless --partial is
# given: then their record, log and resume state (ignored by git otherwise) are committed too, so a later
# session on a new machine resumes them instead of starting again: checkpoint_last.pt (the last epoch) with
# checkpoint_best.pt (the weights selected so far, which the run reloads at its end), and a text reader's
# features.pt, the LLM reads already made (the costly part of those runs: one stop lost ArrowHead's 36
# TRAIN reads and most of its TEST reads). A run that has finished since drops its committed resume state
# from the index (the files stay on this machine). (The weights committed before this rule left the tree
# by hand, in batches under the push cap, on 2026-12-07: a deletion weighs in a push too.)
# Resume state larger than TSLLM_MAX_CHECKPOINT_MB (default 10) stays on this machine only: a submission is
# refused whole past 256 MiB of diffs, and one session's align=prototypes resume checkpoint (a 100 x 49152
# mixing matrix with Adam's state: 71 MB) passed that and lost the session's work. An unfinished run whose
# checkpoint_last.pt is over the cap is committed as progress (record and log), not resume state.
#   bash scripts/commit_finished.sh "(what the runs are)"            # finished runs only
#   bash scripts/commit_finished.sh --partial "(what the runs are)"  # before a session ends
set -euo pipefail
cd "$(dirname "$0")/.."
max_bytes=$(( ${TSLLM_MAX_CHECKPOINT_MB:-10} * 1024 * 1024 ))
RESUME_FROM=(checkpoint_last.pt features.pt)  # what an unfinished run resumes from (features.pt: text readers)
RESUME_STATE=("${RESUME_FROM[@]}" checkpoint_best.pt)
has_resume_state() {  # $1: run dir
  local f
  for f in "${RESUME_FROM[@]}"; do [ -f "$1/$f" ] && return 0; done
  return 1
}
# Unstage an unfinished run's staged .pt files that may not travel: those over the cap, and its selected
# weights when its checkpoint_last.pt stayed out (without it the run starts again, and so do they).
unstage_oversized_resume_state() {  # $1: run dir
  local pt
  while IFS= read -r -d '' pt; do  # literal pathspecs: run dirs may hold [ ] (kernel-size lists)
    [[ $pt == *.pt ]] || continue
    if [ "$(stat -c %s "$pt")" -gt "$max_bytes" ]; then
      git reset -q -- ":(literal)$pt" && echo "commit_finished.sh: $pt is over ${TSLLM_MAX_CHECKPOINT_MB:-10} MB, kept here only" >&2
    fi
  done < <(git diff --cached --name-only -z --diff-filter=AM -- ":(literal)$1")
  if [ -f "$1/checkpoint_best.pt" ] \
     && ! git ls-files --error-unmatch -- ":(literal)$1/checkpoint_last.pt" >/dev/null 2>&1; then
    git reset -q -- ":(literal)$1/checkpoint_best.pt"
  fi
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
    while IFS= read -r -d '' pt; do  # its tracked .pt files (resume state): they leave the index
      [[ $pt == *.pt ]] || continue
      git rm -q --cached -- ":(literal)$pt"
    done < <(git ls-files -z -- ":(literal)$dir")
    if [ -n "$(git status --porcelain -- "$dir")" ]; then
      git add -- "$dir"  # .pt files are ignored (results/**/*.pt): only the evidence is staged
      git diff --cached --quiet -- ":(literal)$dir" || added=$((added + 1))
    fi
  elif [ "$partial" = 1 ] && has_resume_state "$dir"; then
    git add -- "$dir"
    for f in "${RESUME_STATE[@]}"; do
      if [ -f "$dir/$f" ]; then git add -f -- "$dir/$f"; fi
    done
    unstage_oversized_resume_state "$dir"
    if git diff --cached --quiet -- "${RESUME_FROM[@]/#/:(literal)$dir/}"; then
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
