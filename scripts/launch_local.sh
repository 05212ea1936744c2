#!/usr/bin/env bash
# Starts N processes of one command on this machine, joined by jax.distributed, for testing
# the multi-host code path without a cluster:
#
#   scripts/launch_local.sh N [--devices D] COMMAND [ARGS...]
#   scripts/launch_local.sh 2 --devices 2 attnlab train --config configs/mqar.py:smoke=True --workdir /tmp/mp
#
# Process i gets JAX_COORDINATOR_ADDRESS=127.0.0.1:<free port>, JAX_NUM_PROCESSES=N and
# JAX_PROCESS_ID=i, which `attnlab.train.initialize_distributed` (called by `attnlab`) reads;
# CPU processes talk over gloo. --devices D makes each process a CPU host with D fake
# devices (JAX_PLATFORMS=cpu, XLA_FLAGS=--xla_force_host_platform_device_count=D).
# Every process writes to this terminal (only process 0 logs metrics). The script exits
# with the first non-zero exit status, ending the other processes (they would wait forever
# in a collective); 0 when all succeed. Bad arguments: one line on stderr, exit 2.
set -u

usage() { echo "usage: scripts/launch_local.sh N [--devices D] COMMAND [ARGS...]: $1" >&2; exit 2; }

[[ $# -ge 1 && "$1" =~ ^[1-9][0-9]*$ ]] || usage "N must be a positive integer, got '${1-}'"
num=$1; shift
devices=""
if [[ "${1-}" == "--devices" ]]; then
  [[ "${2-}" =~ ^[1-9][0-9]*$ ]] || usage "--devices must be a positive integer, got '${2-}'"
  devices=$2; shift 2
fi
[[ $# -ge 1 ]] || usage "no command given"

port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if [[ -n "$devices" ]]; then
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="$(echo "${XLA_FLAGS-}" | sed 's/--xla_force_host_platform_device_count=[0-9]*//') --xla_force_host_platform_device_count=$devices"
fi

pids=()
for ((i = 0; i < num; i++)); do
  JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES=$num JAX_PROCESS_ID=$i "$@" &
  pids+=($!)
done

status=0
for ((left = num; left > 0; left--)); do
  wait -n
  rc=$?
  if [[ $rc -ne 0 ]]; then
    status=$rc
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    break
  fi
done
wait
exit $status
