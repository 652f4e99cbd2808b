#!/usr/bin/env bash
# One prepared GPU session: the CUDA paths (device-resident data, bf16 autocast, fused AdamW, compile)
# run end to end, and their speed. Writes JSON/logs into ${OUT:-.}.
set -u
OUT=${OUT:-.}; PY=${PY:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 VINY_CACHE_DIR=/tmp/viny-cache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
# 1. bench: every regime, fp32 and bf16, against the plain baseline (same run)
timeout 170 $PY -m viny_probe bench --device cuda --precision both --steps 20 --repeats 3 --epoch-batches 20 \
  --workers 8 --json > "$OUT/bench_cuda.json" 2> "$OUT/bench_cuda.log"; echo "bench rc=$?"
# 2. the demo chain with the study's model on the GPU (bf16)
/usr/bin/time -f "demo wall %e s" timeout 150 $PY -m viny_probe demo --model viny --device cuda --precision bf16 \
  --out /tmp/demo-viny -q > "$OUT/demo_viny.txt" 2>&1; echo "demo rc=$?"; tail -22 "$OUT/demo_viny.txt"
cp /tmp/demo-viny/3-segment/predictions.png "$OUT/demo_viny_predictions.png" 2>/dev/null
# 3. torch.compile on CUDA, one short segmentation run
timeout 120 $PY -m viny_probe train segment --model viny --device cuda --precision bf16 --compile --epochs 3 \
  --train-size 2000 --test-size 500 -q --out /tmp/seg-compile > "$OUT/compile.txt" 2>&1; echo "compile rc=$?"
grep -h img_per_s /tmp/seg-compile/metrics.jsonl | tail -2
# 4. the training loop itself (device-resident set, loss read every 25 steps): epoch img/s, fp32 and bf16
for P in fp32 bf16; do
  timeout 100 $PY -m viny_probe train segment --model viny --device cuda --precision $P --epochs 4 \
    --train-size 2500 --test-size 500 -q --out /tmp/seg-loop-$P > "$OUT/loop_$P.txt" 2>&1; echo "loop $P rc=$?"
  grep -h train_set_on /tmp/seg-loop-$P/data.json; grep -h img_per_s /tmp/seg-loop-$P/metrics.jsonl | tail -2
done
