#!/usr/bin/env bash
# The GPU quality job: the shipped models' training runs side by side on one lent GPU, in two device calls.
#
#   here:      bash bench/gpu_quality.sh prepare        # .gpudata/a (EMNIST, MNIST), .gpudata/b (Fashion-MNIST)
#   device 1:  bash bench/gpu_quality.sh data && bash bench/gpu_quality.sh check   # carry [".gpudata/a"]:
#                                                       # unpacks into .gpuraw/, then a 1-minute check
#   device 2:  bash bench/gpu_quality.sh data && FIRST=4 bash bench/gpu_quality.sh sweep   # carry [".gpudata/b"]
#   here:      python -m cgan.sweep unpack <files_at> --to sweep-back
#   here:      bash bench/gpu_quality.sh smoke          # the same plan at tiny sizes on the CPU, 2 minutes
#                                                       # (reads .gpuraw if `data` made it, else $CGAN_DATA_DIR)
#
# Why two calls: the working tree (36.5 MiB) and the three datasets (49 MiB as xz: 23 + 26) are over the 64 MiB a
# call may carry, and a warm machine keeps ignored folders (.gpuraw) between calls.
# The plan is bench/plans/gpu-from-scratch.json (PLAN=bench/plans/gpu-continuations.json for the continuations run on
# 2026-12-04; PLAN=... for any other); TRAIN_MINUTES and EVAL_MINUTES are the
# deadlines of cgan.sweep; the archives go to $OUT (the device tool's folder that comes back).
set -euo pipefail
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SELF")/.."
PLAN=${PLAN:-bench/plans/gpu-from-scratch.json}
PY=${PYTHON:-python3}

compress() {  # compress SRC (the official .gz or a plain file) into DEST.xz
  local src=$1 dest=$2
  mkdir -p "$(dirname "$dest")"
  [ -s "$dest.xz" ] && return
  if [ -f "$src.gz" ]; then zcat "$src.gz" | xz -9e -T1 > "$dest.xz.tmp"; else xz -9e -T1 -c "$src" > "$dest.xz.tmp"; fi
  mv "$dest.xz.tmp" "$dest.xz"
}

case "${1:-}" in
  prepare)
    src=${CGAN_DATA_DIR:-../shared/data}
    for f in mnist/t10k-images-idx3-ubyte mnist/t10k-labels-idx1-ubyte \
             emnist/emnist-bymerge-test-images-idx3-ubyte emnist/emnist-bymerge-test-labels-idx1-ubyte \
             emnist/emnist-bymerge-mapping.txt; do compress "$src/$f" ".gpudata/a/$f"; done
    for f in fashion-mnist/train-images-idx3-ubyte fashion-mnist/train-labels-idx1-ubyte \
             fashion-mnist/t10k-images-idx3-ubyte fashion-mnist/t10k-labels-idx1-ubyte; do
      compress "$src/$f" ".gpudata/b/$f"; done
    du -sh .gpudata/a .gpudata/b ;;
  data)
    shopt -s nullglob
    for f in .gpudata/*/*/*.xz; do
      rel=${f#.gpudata/*/}; out=.gpuraw/${rel%.xz}
      mkdir -p "$(dirname "$out")"
      [ -s "$out" ] || { xz -dc "$f" > "$out.tmp" && mv "$out.tmp" "$out"; }
    done
    ls -R .gpuraw | head -20 ;;
  check)  # on the device before the sweep (~1 min): versions, then a short EMNIST continuation (eager, so no
          # compile wait), exported and scored with the full protocol there: the sweep's path end to end, and
          # the shipped model's numbers on the GPU beside the CPU ones in checkpoints/emnist/evaluation.json
    dev=${DEVICE:-cuda}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    tmp=$(mktemp -d /tmp/check.XXXX); t0=$(date +%s.%N)
    PYTHONUNBUFFERED=1 "$PY" train.py --init-from checkpoints/emnist --data-dir .gpuraw/emnist --split test \
      --d-warmup 10 --steps 30 --checkpoint-every 30 --log-every 10 --no-compile --no-progress --device "$dev" \
      --out "$tmp/run"
    "$PY" -m cgan.export "$tmp/run/checkpoints/step-0000030" "$tmp/export" > /dev/null; t1=$(date +%s.%N)
    PYTHONUNBUFFERED=1 timeout "${CHECK_EVAL_SECONDS:-120}" "$PY" -m cgan.evaluate "$tmp/export" \
      --evaluator checkpoints/emnist --data-dir .gpuraw/emnist --device "$dev" ${CHECK_EVAL_ARGS:-}
    t2=$(date +%s.%N)
    "$PY" -c "import sys; a, b, c = map(float, sys.argv[1:]); print(f'check: train + export {b - a:.1f} s, evaluation {c - b:.1f} s')" "$t0" "$t1" "$t2"
    # --cuda-graph (issue: speed), a few seconds: does the whole iteration capture and replay on this GPU?
    PYTHONUNBUFFERED=1 "$PY" train.py --dataset mnist --data-dir .gpuraw/mnist --split test --cuda-graph \
      --batch-size 256 --steps 200 --log-every 100 --no-progress --device "$dev" --out "$tmp/graph" > "$tmp/graph.log" 2>&1 \
      && { echo "check: --cuda-graph ran"; grep -E "^done|images_per_s|img/s" "$tmp/graph.log" | tail -2; tail -n 3 "$tmp/graph/losses.csv"; } \
      || { echo "check: --cuda-graph FAILED:"; grep -m 3 -E "Error|error" "$tmp/graph.log"; }
    # the captured graph is the CUDA default, so the sweep's runs use it: capture once with the plans' options
    PYTHONUNBUFFERED=1 "$PY" train.py --dataset mnist --data-dir .gpuraw/mnist --split test --g-width 64 \
      --batch-size 128 --d-minibatch-std 4 --balanced-classes --fake-labels data --mismatch-weight 0.5 \
      --mismatch-labels hardest --beta1 0 --steps 100 --log-every 50 --no-progress --device "$dev" \
      --out "$tmp/graph-options" > "$tmp/graph-options.log" 2>&1 \
      && { echo "check: the plans' options captured as a graph:"; tail -n 2 "$tmp/graph-options/losses.csv"; } \
      || { echo "check: the plans' options FAILED as a graph (run the sweep with TRAIN_EXTRA=--no-cuda-graph):";
           grep -m 3 -E "Error|error" "$tmp/graph-options.log"; } ;;
  sweep)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    runs=$(mktemp -d /tmp/sweep.XXXX)
    if [ -n "${FIRST:-}${TRAIN_EXTRA:-}" ]; then  # FIRST=N: only the plan's first N runs (none queued behind
      # them to share the GPU); TRAIN_EXTRA="...": options added to every run (later options win in train.py)
      cut=$(mktemp /tmp/plan.XXXX.json)
      "$PY" -c 'import json, sys; p = json.load(open(sys.argv[1])); n = int(sys.argv[3] or len(p["runs"]))
p["runs"] = p["runs"][:n]; [r["train"].extend(sys.argv[4].split()) for r in p["runs"]]; json.dump(p, open(sys.argv[2], "w"))' \
        "$PLAN" "$cut" "${FIRST:-}" "${TRAIN_EXTRA:-}"
      PLAN=$cut
    fi
    rc=0
    PYTHONUNBUFFERED=1 "$PY" -m cgan.sweep run "$PLAN" --runs-dir "$runs" --train-minutes "${TRAIN_MINUTES:-6}" \
      --eval-minutes "${EVAL_MINUTES:-2}" --stop-grace "${STOP_GRACE:-120}" --pack "${OUT:?set OUT to the folder that comes back}" || rc=$?
    tail -n 3 "$runs"/*.train.log
    exit $rc ;;
  smoke)  # the plan's runs at tiny sizes on this CPU: options given later win in train.py's parser
    tiny=$(mktemp /tmp/plan.XXXX.json)
    # the data that `data` unpacked, else the plain copies it was packed from (no xz round trip needed here)
    raw=.gpuraw; [ -d .gpuraw ] || raw=${CGAN_DATA_DIR:-../shared/data}
    "$PY" - "$PLAN" "$tiny" "$raw" <<'EOF'
import json, sys
plan = json.load(open(sys.argv[1]))
raw = lambda args: [sys.argv[3] + a[len(".gpuraw"):] if a.startswith(".gpuraw/") else a for a in args]
for r in plan["runs"]:
    r["train"], r["evaluate"] = raw(r["train"]), raw(r.get("evaluate") or []) or None
    # a continuation keeps its generator's size (--init-from refuses another); its D is new, so it shrinks too
    # (and its D-alone warm-up shrinks, so the smoke reaches joint steps and evaluates their exports)
    small = (["--d-width", "8", "--d-warmup", "10"] if "--init-from" in r["train"]
             else ["--g-width", "8", "--d-width", "8", "--z-dim", "16"])
    r["train"] += [*small, "--batch-size", "16", "--device", "cpu", "--no-amp", "--no-compile",
                   "--checkpoint-every", "25", "--keep", "2", "--threads", "1"]
    r["evaluate"] = [*r["evaluate"], "--quick", "--device", "cpu", "--threads", "1"] if r.get("evaluate") else None
json.dump(plan, open(sys.argv[2], "w"))
EOF
    out=${OUT:-$(mktemp -d /tmp/sweep-out.XXXX)}
    rc=0
    PLAN=$tiny OUT=$out TRAIN_MINUTES=${TRAIN_MINUTES:-1} EVAL_MINUTES=${EVAL_MINUTES:-4} PYTHON=$PY bash "$SELF" sweep || rc=$?
    ls -l "$out"
    exit $rc ;;
  *) echo "usage: bash bench/gpu_quality.sh prepare|data|check|sweep|smoke" >&2; exit 2 ;;
esac
