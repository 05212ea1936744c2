#!/usr/bin/env bash
# Trains and tests every LRA variant at the CPU budget of configs/listops.py, one after another:
#   nice bash experiments/listops/run_all.sh [variant ...]
# Workdirs: runs/listops/<variant> (git-ignored); kept here: logs/<variant>.{train,test}.log,
# logs/<variant>.metrics.jsonl, logs/<variant>.test.json (the test-split eval) and the wall times.
set -u
cd "$(dirname "$0")/../.."
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(mha linformer nystromformer performer bigbird longformer linear lsh)
out=experiments/listops/logs
for v in "${variants[@]}"; do
  wd=runs/listops/$v
  rm -rf "$wd"
  t0=$(date +%s)
  attnlab train --config "configs/listops.py:variant=$v" --workdir "$wd" > "$out/$v.train.log" 2>&1
  t1=$(date +%s)
  attnlab eval --config "configs/listops.py:variant=$v" --workdir "$wd" --config.task.split=test \
      > "$out/$v.test.log" 2>&1
  t2=$(date +%s)
  tail -n 1 "$out/$v.test.log" > "$out/$v.test.json"
  cp "$wd/metrics.jsonl" "$out/$v.metrics.jsonl"
  echo "{\"variant\": \"$v\", \"train_wall_s\": $((t1 - t0)), \"test_wall_s\": $((t2 - t1))}" >> "$out/walltimes.jsonl"
done
