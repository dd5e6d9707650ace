#!/usr/bin/env bash
# The whole SO-100 pipeline from nothing: record expert demonstrations through ROS into rosbag2,
# convert them to HDF5, train ACT, and evaluate it closed-loop through ROS. Prints time per stage.
#   EPISODES=50 EVAL_EPISODES=20 STEPS=... bash scripts/pipeline.sh [work dir]
set -euo pipefail
work=${1:-runs/pipeline-$(date +%Y%m%d-%H%M%S)}
episodes=${EPISODES:-50}
eval_episodes=${EVAL_EPISODES:-20}
mkdir -p "$work"
declare -A seconds

stage() {
  local name=$1; shift
  printf '\n\033[1m== %s ==\033[0m\n' "$name"
  local start=$SECONDS
  "$@"
  seconds[$name]=$((SECONDS - start))
}

stage record python -m librobot_bringup.record --output "$work/bag" --episodes "$episodes" --seed 0
stage convert python -m librobot_training.bag_to_hdf5 "$work/bag" --output "$work/hdf5" --sim
stage train python -m librobot_training.train --config src/librobot_training/config/act_so100.yaml \
  dataset="$work/hdf5" output_dir="$work/checkpoint" ${STEPS:+train.steps=$STEPS}
stage evaluate python -m librobot_bringup.demo --checkpoint "$work/checkpoint" \
  --episodes "$eval_episodes" --seed 1000

printf '\n\033[1m== time per stage ==\033[0m\n'
for name in record convert train evaluate; do printf '%-9s %5d s\n' "$name" "${seconds[$name]}"; done
