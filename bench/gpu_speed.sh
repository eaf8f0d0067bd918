#!/usr/bin/env bash
# The GPU speed table in one device call, JSON files into $OUT (run after `gpu_quality.sh data`: the
# time-to-quality rows read .gpuraw/mnist). Every row is `python -m cgan.bench`; see bench/README.md.
#
#   device:  bash bench/gpu_speed.sh                       # about 8-9 minutes on an H100-class GPU (estimated), 11 with row 7
#   here:    SMOKE=1 DEVICE=cpu bash bench/gpu_speed.sh    # the same rows at toy sizes on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEV=${DEVICE:-cuda}
OUT=${OUT:?set OUT to the folder that comes back}; mkdir -p "$OUT"
RES=$(mktemp -d)  # the JSON files, packed into one tar (the device returns at most 8 files)
# MNIST for the time-to-quality rows: what `gpu_quality.sh data` unpacked, else the plain copies (a CPU smoke)
MNIST=.gpuraw/mnist; [ -d "$MNIST" ] || MNIST=${CGAN_DATA_DIR:-../shared/data}/mnist
if [ -n "${SMOKE:-}" ]; then
  size=(--steps 3 --warmup 4 --batch-size 16); ttq=(--ttq-quick --ttq-max-steps 20 --ttq-eval-every 10)
  big=(--ttq-batch-size 256 --ttq-lr-warmup 2)
else
  size=(); ttq=(); big=(--ttq-batch-size 512,2048 --ttq-lr-warmup 100)
fi
# every row packs the JSON so far into $OUT, so a call cut off at its limit still brings back what finished
bench() { PYTHONUNBUFFERED=1 "$PY" -m cgan.bench --device "$DEV" "$@"; tar -C "$RES" -cf "$OUT/gpu-speed.tar" .; }

# 1. first, since a call may be cut short: the default architecture, captured graph, NCHW (the CUDA default)
#    against channels_last (NHWC, the layout cuDNN's bf16 tensor-core kernels want; measured only on the CPU
#    so far), at batch 256 and 1024. An iteration is 524 GFLOP at batch 256 (the TFLOP/s column): 100,000
#    img/s needs 205 TFLOP/s of bf16 convolutions.
for b in 256 1024; do
  [ -n "${SMOKE:-}" ] && b=16
  for layout in --no-channels-last --channels-last; do
    bench --archs sngan --loaders device --cuda-graph "$layout" --no-tutorial --batch-size "$b" \
      ${SMOKE:+--steps 3 --warmup 4} --json "$RES/speed-graph-${layout#--}-b$b.json"
  done
done
# 1b. where the time goes: the kernels of 5 eager iterations at batch 256 in each layout (count, summed time
#    beside the graph's time per iteration above, convolutions and matrix products against the rest)
for layout in --no-channels-last --channels-last; do
  bench --archs sngan --loaders device "$layout" --skip-throughput --no-tutorial --kernel-profile \
    ${SMOKE:+--batch-size 16} --json "$RES/kernels-${layout#--}.json" || echo "kernel profile failed; the rows go on"
done
# 2. every architecture, both data paths, train.py's defaults (CUDA: bf16, the iteration as one captured CUDA
#    graph on the device path, torch.compile reduce-overhead on the DataLoader path), with the tutorial
#    baseline of each and the host-sync check
bench --archs sngan,dcgan,mlp --loaders device,dataloader --check-syncs "${size[@]}" --json "$RES/speed-defaults.json"
# 3. the default architecture: torch.compile (reduce-overhead) instead of the captured graph, and eager for scale
bench --archs sngan --loaders device --compile --check-syncs --no-tutorial "${size[@]}" --json "$RES/speed-compile.json"
bench --archs sngan --loaders device --no-compile --no-tutorial "${size[@]}" --json "$RES/speed-eager.json"
# 4. larger batches (throughput per batch; quality per batch is the time-to-quality rows): the captured graph
#    in both layouts at 4096 (1024 is row 1), torch.compile at 1024 and 4096
b=4096; [ -n "${SMOKE:-}" ] && b=32
for layout in --no-channels-last --channels-last; do
  bench --archs sngan --loaders device --cuda-graph "$layout" --no-tutorial --batch-size "$b" \
    ${SMOKE:+--steps 3 --warmup 4} --json "$RES/speed-graph-${layout#--}-b$b.json"
done
for b in 1024 4096; do
  [ -n "${SMOKE:-}" ] && b=32
  bench --archs sngan --loaders device --compile --no-tutorial --batch-size "$b" ${SMOKE:+--steps 3 --warmup 4} \
    --json "$RES/speed-compile-b$b.json"
done
# 5. compilation: cold (empty inductor cache) and warm start
bench --archs sngan --skip-throughput --no-tutorial --compile-start ${SMOKE:+--batch-size 16} --json "$RES/compile-start.json"
# 6. time to MNIST quality, cold start included: CUDA graph, then torch.compile
bench --skip-throughput --no-tutorial --time-to-quality --cuda-graph --data-dir "$MNIST" --split test \
  --evaluator checkpoints/mnist "${ttq[@]}" --json "$RES/ttq-graph.json"
bench --skip-throughput --no-tutorial --time-to-quality --compile --data-dir "$MNIST" --split test \
  --evaluator checkpoints/mnist "${ttq[@]}" --json "$RES/ttq-compile.json"
# 7. time to quality at larger batches: rates times sqrt(B/128), warmed up over 100 steps (batch 128 is row 6)
bench --skip-throughput --no-tutorial --time-to-quality --cuda-graph --data-dir "$MNIST" --split test \
  --evaluator checkpoints/mnist --ttq-lr-scaling sqrt "${big[@]}" "${ttq[@]}" --json "$RES/ttq-graph-batches.json"
"$PY" -m cgan.bench --summarize "$RES"
