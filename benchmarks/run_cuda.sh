#!/usr/bin/env bash
# The CUDA measurements of docs/performance.md, as one script (JSON files into ${OUT:-.}).
#   bash benchmarks/run_cuda.sh
set -u
OUT=${OUT:-.}
PY=${PY:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# 1. every regime, fp32 and bf16, batch 64, against the plain baseline (8 DataLoader workers on 16 cores)
timeout 200 $PY benchmarks/bench_train.py --device cuda --json --steps 20 --repeats 3 --epoch-batches 20 \
  --workers 8 > "$OUT/cuda_b64.json" 2> "$OUT/cuda_b64.log"; echo "b64 rc=$?"
# 2. settings sweep on simmim (fused AdamW, bf16, no per-step loss sync, torch.compile)
timeout 200 $PY benchmarks/bench_train.py --device cuda --variants --steps 20 --repeats 3 \
  --variant-list loop,bf16,bf16+nosync,compile,bf16+compile,bf16+compile+nosync \
  > "$OUT/cuda_variants.json" 2> "$OUT/cuda_variants.log"; echo "variants rc=$?"
# 3. bigger batch for context (bf16, simmim only)
timeout 90 $PY benchmarks/bench_train.py --device cuda --json --steps 20 --repeats 3 --epoch-batches 10 \
  --batch 256 --precision bf16 --regimes simmim --baseline none --dataset random \
  > "$OUT/cuda_b256.json" 2> "$OUT/cuda_b256.log"; echo "b256 rc=$?"
tail -n 3 "$OUT"/*.log
