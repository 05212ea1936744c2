#!/usr/bin/env bash
# 40-step reruns of each variant for the steps/s column of table.md (median of steps 10-40 in
# logs/speed/<variant>.log; the load average after each run in logs/speed/load.txt).
#   nice bash experiments/listops/speed.sh
cd "$(dirname "$0")/../.."
for v in mha linformer nystromformer performer bigbird longformer linear lsh; do
  rm -rf /tmp/lo_speed_$v
  nice attnlab train --config configs/listops.py:variant=$v --workdir /tmp/lo_speed_$v --config.train.steps=40 --config.train.warmup_steps=4 --config.train.eval_every=0 --config.train.checkpoint_every=0 --config.train.log_every=5 --config.task.num_val_examples=32 > experiments/listops/logs/speed/$v.log 2>&1
  echo "$v $(uptime)" >> experiments/listops/logs/speed/load.txt
done
