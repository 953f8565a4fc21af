#!/usr/bin/env bash
# Commit the evidence runs that have finished since the last commit (record, log, selected weights), so a
# session that ends loses nothing that finished. Unfinished runs stay out until they finish, unless
# --partial is given: then their record, log and resume checkpoint (checkpoint_last.pt, ignored by git
# otherwise) are committed too, so a later session on a new machine resumes them from their last epoch
# instead of epoch 1. A run that has finished drops its committed resume checkpoint from the index.
#   bash scripts/commit_finished.sh "(what the runs are)"            # finished runs only
#   bash scripts/commit_finished.sh --partial "(what the runs are)"  # before a session ends
set -euo pipefail
cd "$(dirname "$0")/.."
if ! git diff --cached --quiet -- . ':!results/runs'; then
  echo "commit_finished.sh: changes outside results/runs are staged; commit or unstage them first" >&2; exit 2
fi
partial=0
if [ "${1:-}" = "--partial" ]; then partial=1; shift; fi
added=0 saved=0
while IFS= read -r rec; do
  dir=$(dirname "$rec")
  if grep -q '"status": "finished"' "$rec"; then
    git ls-files --error-unmatch -- "$dir/checkpoint_last.pt" >/dev/null 2>&1 \
      && git rm -q --cached -- "$dir/checkpoint_last.pt"
    if [ -n "$(git status --porcelain -- "$dir")" ]; then
      git add -- "$dir" && added=$((added + 1))
    fi
  elif [ "$partial" = 1 ] && [ -f "$dir/checkpoint_last.pt" ]; then
    git add -- "$dir" && git add -f -- "$dir/checkpoint_last.pt" && saved=$((saved + 1))
  fi
done < <(find results/runs -name record.json)
find results/runs -name multirun.yaml -exec git add -- {} + 2>/dev/null || true
find results/runs -path "*/.finished/*" -type f -exec git add -- {} + 2>/dev/null || true  # the skip index
if [ $((added + saved)) -gt 0 ] && ! git diff --cached --quiet -- results/runs; then
  parts=()
  [ "$added" -gt 0 ] && parts+=("$added finished run(s)")
  [ "$saved" -gt 0 ] && parts+=("resume state of $saved unfinished run(s)")
  msg="Evidence: $(IFS=,; echo "${parts[*]}" | sed 's/,/, /')"
  # The index, not a pathspec: `git commit -- PATH` would re-add a resume checkpoint just dropped.
  git commit -qm "$msg ${1:-}" && echo "committed: $msg"
fi
