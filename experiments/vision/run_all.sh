#!/bin/bash
# The issue-12 vision runs, one training process at a time (resumable: rerun to continue).
# Usage (from the repository root): nohup bash experiments/vision/run_all.sh > experiments/vision/logs/run_all.log 2>&1 &
set -x
attnlab reproduce lra_pathfinder --scale small
attnlab reproduce vision_digits --scale small --seeds 1
attnlab reproduce vision_digits_ablation --scale small --seeds 1
attnlab reproduce vision_digits --scale small --seeds 3
attnlab reproduce vision_digits_ablation --scale small --seeds 3
