#!/usr/bin/env bash
# Commit the evidence runs that have finished since the last commit (record, log, selected weights), so a
# session that ends loses nothing that finished. Unfinished runs stay out until they finish.
set -euo pipefail
cd "$(dirname "$0")/.."
added=0
while IFS= read -r rec; do
  dir=$(dirname "$rec")
  if grep -q '"status": "finished"' "$rec" && [ -n "$(git status --porcelain -- "$dir")" ]; then
    git add -- "$dir" && added=$((added + 1))
  fi
done < <(find results/runs -name record.json)
find results/runs -name multirun.yaml -exec git add -- {} + 2>/dev/null || true
find results/runs -path "*/.finished/*" -type f -exec git add -- {} + 2>/dev/null || true  # the skip index
if [ "$added" -gt 0 ]; then git commit -qm "Evidence: $added finished run(s) ${1:-}" -- results/runs && echo "committed $added"; fi
