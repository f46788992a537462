#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one run (the device machine: torch, transformers, numpy,
# pyarrow; none of mathcorpus's other dependencies). Writes logs and JSON to $OUT when set.
#   bash bench/gpu_checks.sh
set -uo pipefail
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
timeout 240 python3 bench/gpu_train_step.py 2>&1 | tee "$OUT/gpu_train_step.log"
timeout 240 python3 bench/gpu_encoder.py --device cuda --docs 2048 --batch-size 64 --json "$OUT/gpu_encoder.json" 2>&1 | tee "$OUT/gpu_encoder.log"
