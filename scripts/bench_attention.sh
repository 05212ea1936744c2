#!/usr/bin/env bash
# The attention benchmark behind the numbers quoted in reviews: raw softmax ops (mha =
# causal, sliding_window = window 256) against jax.nn.dot_product_attention and PyTorch
# SDPA, B=1, H=8, D=64, fp32, T=512..4096. Usage: scripts/bench_attention.sh [out.json]
set -euo pipefail
out="${1:-bench_attention.json}"
attnlab bench attention --variants mha,sliding_window --seq 512,1024,2048,4096 \
  --impls reference,xla --repeats 5 --json "$out"
