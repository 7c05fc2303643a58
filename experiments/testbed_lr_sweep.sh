#!/usr/bin/env bash
# Learning-rate and batch sweep per model size on the testbed (issue 3: the rule is tuned, not
# guessed). Writes run records under $1 (default runs/lr-sweep); summarise with
#   scalelab fit ... or python experiments/summarise_lr_sweep.py runs/lr-sweep
set -euo pipefail
RUNS=${1:-runs/lr-sweep}
WORKERS=${WORKERS:-2}
for size_tokens in d2:4e6 d4:4e6 d6:3e6; do
  size=${size_tokens%%:*}; tokens=${size_tokens##*:}
  for bs in 2 4; do
    for lr in 0.0025 0.005 0.01; do
      scalelab sweep --plan grid --sizes "$size" --tokens "$tokens" --workers 1 \
        --set lr=$lr --set batch_size=$bs --runs-dir "$RUNS" &
      while [ "$(jobs -rp | wc -l)" -ge "$WORKERS" ]; do sleep 2; done
    done
  done
done
wait
