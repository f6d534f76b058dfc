#!/usr/bin/env bash
# GPU check (bench/gpu.py): dlrun on an NVIDIA GPU against a hand-written loop, in 32-bit and bf16;
# peak memory; reproduce on the GPU; DDP with more than one GPU. Under 5 minutes on one GPU.
#   bash bench/gpu.sh                          # writes bench/results/gpu.{json,md}
#   bash bench/gpu.sh --dry-run --out /tmp/g   # the same steps on CPU at tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m bench.gpu "$@"
