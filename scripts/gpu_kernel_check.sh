#!/usr/bin/env bash
# One-shot GPU check of kernels_pallas (issue 13), for a session that is lent a GPU.
#
# Run once through the device tool from the repo root, e.g.
#   run(command="bash scripts/gpu_kernel_check.sh", timeout_s=600)        (carry [".whl"] if wheels travel)
# It needs no registry: attnlab comes from the working tree (PYTHONPATH), optional peers
# (tokamax, ...) from wheels in .whl/ if present (see the device README). Everything lands in
# $OUT: gpu.txt (device, jax), tests.txt (pytest: interpret-mode and compiled Triton kernel
# tests), bench_T.json / bench_T.txt per length, summary.md (the table for the closing note).
# The whole run keeps within BUDGET_S seconds (default 540): each step gets what is left.
set -u
OUT=${OUT:-/tmp/gpu_kernel_check}
BUDGET_S=${BUDGET_S:-540}
PARTS=${PARTS:-softmax,linear}
START=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
mkdir -p "$OUT"

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONWARNINGS=${PYTHONWARNINGS:-default::DeprecationWarning}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"; } 2>&1 | tee "$OUT/gpu.txt"

# 1. Kernel tests: interpret mode (as on CPU) and the compiled Triton kernel (fp32, bf16).
if [[ $PARTS == *softmax* ]]; then
timeout $(( $(left) < 200 ? $(left) : 200 )) \
  python3 -m pytest tests/kernels/test_block_sparse_flash.py -q -p no:cacheprovider -ra -W default 2>&1 \
  | tee "$OUT/tests.txt" | tail -30
fi

# 1b. The chunked linear kernel: its tests, then its benchmark at T = 8k (bf16, D = 128, H = 16,
#     every decay: none, per head, per token, GLA gates), fla's chunk kernels as the peer.
if [[ $PARTS == *linear* ]] && [ "$(left)" -gt 20 ]; then
timeout $(( $(left) < 150 ? $(left) : 150 )) \
  python3 -m pytest tests/kernels/test_chunked_linear.py -q -p no:cacheprovider -ra -W default 2>&1 \
  | tee "$OUT/tests_linear.txt" | tail -30
[ "$(left)" -gt 20 ] && timeout $(( $(left) < 100 ? $(left) : 100 )) python3 -m attnlab.bench.kernels --family linear --seq 8192 --heads 16 \
  --head-dim 128 --dtype bfloat16 --chunk 64 --impls xla,pallas,fla --repeats 5 \
  --json "$OUT/linear_8192.json" > "$OUT/linear_8192.txt" 2>&1
echo "linear T=8192 rc=$? ($(left)s left)"; grep "impl=pallas" "$OUT/linear_8192.txt" | head -4
fi
[[ $PARTS == *softmax* ]] || SKIP_SOFTMAX_BENCH=1

# 2. Benchmark at bf16, D=128, H=16: the target length (16k) early, the rest as time allows.
for T in 1024 4096 16384 8192 32768 2048; do
  [ -n "${SKIP_SOFTMAX_BENCH:-}" ] && break
  budget=$(left)
  if [ "$budget" -lt 30 ]; then echo "out of time before T=$T" | tee -a "$OUT/summary.md"; break; fi
  impls=pallas,jax_cudnn,tokamax
  [ "$T" -le 4096 ] && impls=xla,pallas,jax_xla,jax_cudnn,tokamax
  timeout $(( budget < 100 ? budget : 100 )) python3 -m attnlab.bench.kernels --seq "$T" --heads 16 --head-dim 128 \
    --dtype bfloat16 --patterns full,causal,band --density 0.1 --impls "$impls" --repeats 5 \
    --json "$OUT/bench_$T.json" > "$OUT/bench_$T.txt" 2>&1
  echo "T=$T rc=$? ($(left)s left)"; grep "impl=pallas" "$OUT/bench_$T.txt" | head -3
done

# 2b. The Pallas kernel's other tile size at the target length (default: 64 at D=128).
if [ -z "${SKIP_SOFTMAX_BENCH:-}" ] && [ "$(left)" -gt 40 ]; then
  timeout $(( $(left) < 60 ? $(left) : 60 )) python3 -m attnlab.bench.kernels --seq 16384 --heads 16 --head-dim 128 \
    --dtype bfloat16 --patterns causal,band --impls pallas --pallas-block 128 --repeats 5 \
    --json "$OUT/bench_16384_block128.json" > "$OUT/bench_16384_block128.txt" 2>&1
  echo "block 128 at 16k: rc=$?"; grep "impl=pallas" "$OUT/bench_16384_block128.txt" | head -2
fi

# 3. One markdown table per kernel from the JSON files.
for files in "bench_*.json" "linear_*.json"; do
python3 - "$OUT" "$files" <<'PY' | tee -a "$OUT/summary.md"
import glob, json, sys
rows, env = [], {}
for path in sorted(glob.glob(f"{sys.argv[1]}/{sys.argv[2]}")):
  data = json.load(open(path)); env = data["environment"]; rows += data["rows"]
if not rows:
  sys.exit(0)
kind = "chunked linear, peer fla" if rows[0].get("family") == "linear" else "softmax"
print(f"\n{kind} -- device: {env.get('device')}  jax {env.get('jax')}  (bf16, D=128, H=16, B=1)\n")
print("| T | pattern | impl | fwd ms | f+b ms | fwd TF/s | f+b TF/s | fwd/peer | f+b/peer | f+b/dense(full peer) | note |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
f = lambda x, d=2: "" if x is None else f"{x:.{d}f}"
for r in sorted(rows, key=lambda r: (r["seq"], r["pattern"], r["impl"])):
  print(f"| {r['seq']} | {r['pattern']} | {r['impl']} | {f(r.get('fwd_ms'))} | {f(r.get('fwdbwd_ms'))} | "
        f"{f(r.get('fwd_tflops'), 1)} | {f(r.get('fwdbwd_tflops'), 1)} | {f(r.get('fwd_vs_peer'))} | "
        f"{f(r.get('fwdbwd_vs_peer'))} | {f(r.get('fwdbwd_vs_dense'))} | {r.get('note', '')[:80]} |")
PY
done
echo "done in $(( $(date +%s) - START ))s"
