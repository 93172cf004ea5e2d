#!/usr/bin/env bash
# Commit the report's plot images to a branch of their own, under a folder, and push it, so a
# pull-request comment can link them (GitHub comments cannot embed image files).
# Usage: scripts/publish_report_images.sh IMAGES_DIR BRANCH FOLDER   (run inside the checkout)
set -euo pipefail
images=$(realpath "$1") branch=$2 folder=$3
work=$(mktemp -d)
trap 'git worktree remove --force "$work" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

for attempt in 1 2 3; do  # another pull request may push in between: start again from its commit
  git worktree remove --force "$work" >/dev/null 2>&1 || true
  rm -rf "$work"
  if git fetch -q origin "refs/heads/$branch"; then
    git worktree add -q --detach "$work" FETCH_HEAD
  else
    git worktree add -q --detach "$work"
    git -C "$work" checkout -q --orphan "$branch"
    git -C "$work" rm -rq --ignore-unmatch .
  fi
  mkdir -p "$work/$folder"
  cp "$images"/*.png "$work/$folder/"
  git -C "$work" add "$folder"
  git -C "$work" -c user.name="dvc-report" -c user.email="dvc-report@users.noreply.github.com" \
    commit -q -m "Plots for $folder"
  if git -C "$work" push -q origin "HEAD:refs/heads/$branch"; then
    exit 0
  fi
  echo "push to $branch rejected (attempt $attempt), retrying" >&2
done
exit 1
