#!/usr/bin/env bash
# Retrains the bundled demo model (models/demo) as its CARD.md describes, writing its
# training timeline on the way: four commands, each resuming the previous one's checkpoint.
#
#   bash scripts/train-demo.sh [RUN_DIR] [EXPORT_DIR]
#
# RUN_DIR (default build/train/demo) holds the checkpoint, metrics and RUN_DIR/timeline/;
# EXPORT_DIR (default build/export/demo) gets the final inspector-ready folder. Nothing under
# models/ is written: compare, then copy (the timeline goes to models/demo/timeline/).
# An earlier run in RUN_DIR is replaced; a RUN_DIR that is not a run folder is refused.
# Relative paths are taken from the repository's root.
# About 40 min on the 2-core CPU machine. The data windows change at steps 3000, 6000 and
# 10000 (see the card); the timeline is dense around step 10000, where the induction heads form.
# --attention plain trains as the demo was trained (before the fused score kernel), which
# makes the replay bit-exact: the same weights as models/demo/model.onnx.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-build/train/demo}
EXPORT=${2:-build/export/demo}
PY=${PYTHON:-.venv/bin/python}
T=("$PY" -m export.train --data ../shared/data --out "$RUN" --export "$EXPORT"
   --vocab-size 512 --layers 2 --heads 8 --d-model 128 --d-head 16 --n-ctx 128 --batch 32
   --layernorm --lr 3e-3 --weight-decay 0 --eval-every 100 --timeline-fp16 --attention plain)
if [ -e "$RUN" ] && [ -n "$(ls -A "$RUN" 2>/dev/null)" ] && [ ! -e "$RUN/checkpoint.pt" ]; then
  echo "train-demo: $RUN exists and is not a training run's folder (no checkpoint.pt); give an empty or new RUN_DIR" >&2
  exit 1
fi
rm -rf "$RUN"
"${T[@]}" --steps 5000  --repeat-frac 0.5  --repeat-kind random --ckpt-every 1000 --until 3000 \
    --timeline 0,100,300,1000,3000
"${T[@]}" --steps 6000  --repeat-frac 1.0  --repeat-kind text   --ckpt-every 1000 --resume \
    --timeline 6000
"${T[@]}" --steps 10000 --repeat-frac 1.0  --repeat-kind text   --ckpt-every 1000 --resume --threads 1 \
    --timeline 8000,10000
"${T[@]}" --steps 11500 --repeat-frac 0.25 --repeat-kind tiled  --ckpt-every 500  --resume --threads 2 \
    --timeline 10025,10050,10075,10100,10150,10200,10300,10500,11000,11500
"$PY" -m export.timeline check "$RUN/timeline"
