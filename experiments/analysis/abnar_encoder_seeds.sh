#!/usr/bin/env bash
# Abnar & Zuidema's check on the trained encoder (README section 3b) over training seeds:
# trains each variant once per seed (config.seed: init and data order; the data set is fixed)
# and runs abnar_encoder_check.py on every run. Output: abnar_encoder_check_seeds_output.txt.
#   bash experiments/analysis/abnar_encoder_seeds.sh "0 1 2" "mha linear strided moh"
set -euo pipefail
SEEDS=${1:-"0 1 2"}
VARIANTS=${2:-"mha linear strided moh"}
HERE=$(cd "$(dirname "$0")" && pwd)
[ -f /tmp/agree/train.csv ] || python "$HERE/agreement_data.py" /tmp/agree
runs=()
for s in $SEEDS; do
  for v in $VARIANTS; do
    wd=/tmp/agree_${v}_s$s
    [ -d "$wd" ] || attnlab train --config "$HERE/agreement_config.py:variant=$v" --config.seed=$s --workdir "$wd" > "$wd.log" 2>&1
    runs+=("$wd")
  done
done
cd "$HERE" && python abnar_encoder_check.py "${runs[@]}" --inputs 32
