"""Under fsdp=N each device holds ~1/N of the parameters and optimizer state.

Read from the compiled train step's input shardings (`attnlab.train.memory.state_bytes`)
on 8 host devices at fsdp = 1, 2, 4, 8 (data takes the rest). A canary with the
parameters replicated (the "embed" rule mapped to no mesh axis) must fail the check.
"""

import json
import subprocess
import sys

import pytest

from attnlab.models.partitioning import DEFAULT_RULES
from tests.train import subproc

FSDP = (1, 2, 4, 8)
# Norm scales, the step and Adam's count are replicated by design: allow 25% over 1/N.
SLACK = 1.25
REPLICATED = [[name, None if name == "embed" else axes] for name, axes in DEFAULT_RULES]


def _sharded_1_over_n(r, n):
  """Whether params and optimizer state per device are within SLACK of total / n."""
  return all(r[f"{k}_per_device"] * n <= SLACK * r[f"{k}_total"] for k in ("params", "opt_state"))


@pytest.mark.slow
def test_fsdp_state_bytes_per_device_are_one_over_n_and_replicated_params_fail():
  entries = [dict(mesh=dict(data=-1, fsdp=n, tensor=1)) for n in FSDP]
  entries.append(dict(mesh=dict(data=1, fsdp=8, tensor=1), rules=REPLICATED))
  out = subprocess.run([sys.executable, "-m", "tests.train.fsdp_bytes_runner", json.dumps(entries)],
                       cwd=subproc.REPO, env=subproc.runner_env(devices=8), capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  results = [json.loads(l[len("RESULT "):]) for l in out.stdout.splitlines() if l.startswith("RESULT ")]
  *fsdp, canary = results
  for n, r in zip(FSDP, fsdp):
    print(f"fsdp={n}: params {r['params_per_device']} / {r['params_total']} B per device, "
          f"opt state {r['opt_state_per_device']} / {r['opt_state_total']} B, "
          f"all arguments {r['arguments_per_device']} B")
    assert _sharded_1_over_n(r, n), (n, r)
  assert fsdp[0]["params_per_device"] == fsdp[0]["params_total"]  # fsdp=1: nothing split
  assert fsdp[-1]["arguments_per_device"] < fsdp[0]["arguments_per_device"] / 4
  print(f"canary (replicated params, fsdp=8): params {canary['params_per_device']} / "
        f"{canary['params_total']} B per device, all arguments {canary['arguments_per_device']} B")
  assert not _sharded_1_over_n(canary, 8)
