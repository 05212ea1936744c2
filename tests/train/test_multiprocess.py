"""2 processes x 2 CPU devices (jax.distributed over gloo, started by scripts/launch_local.sh)
train the same losses as 1 process x 4 devices, through `attnlab train`.

The 2-process run is SIGKILLed right after its step-3 checkpoint (written collectively by
orbax, each process its own data-iterator state) and relaunched: both processes restore
it and continue, so the check covers per-process data shards, the collective save and
the restore by every process.
"""

import os
import subprocess
import sys

import pytest

from attnlab.train.metrics import read_metrics
from attnlab.train.trainer import KILL_AFTER_CHECKPOINT_ENV
from tests.train import subproc

LAUNCH = os.path.join(subproc.REPO, "scripts", "launch_local.sh")
TRAIN = [sys.executable, "-m", "attnlab.cli", "train", "--config", "configs/mqar.py:smoke=True",
         "--config.mesh.data=2", "--config.mesh.fsdp=2"]  # 6 steps, checkpoints at 3 and 6
RTOL = 1e-6
SIGKILL_EXIT = 128 + 9


def _start(cmd, env):
  return subprocess.Popen(cmd, cwd=subproc.REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=300):
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def _losses(workdir):
  """{(step, key): value} of every train/eval loss logged in `workdir`."""
  return {(r["step"], k): r[k] for r in read_metrics(workdir) for k in r if k.endswith("/loss")}


@pytest.mark.slow
def test_two_processes_match_one_process_across_a_kill_and_resume(tmp_path):
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  single = _start(TRAIN + ["--workdir", one], subproc.runner_env(devices=4))
  launch = [LAUNCH, "2", "--devices", "2"] + TRAIN + ["--workdir", two]
  rc, out = _finish(_start(launch, subproc.runner_env(extra={KILL_AFTER_CHECKPOINT_ENV: "3"})))
  assert rc == SIGKILL_EXIT, out[-3000:]
  assert max(r["step"] for r in read_metrics(two)) == 3
  assert sorted(os.listdir(os.path.join(two, "checkpoints", "3", "data"))) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]

  rc, out = _finish(_start(launch, subproc.runner_env()))
  assert rc == 0, out[-3000:]
  assert "resumed from step 3" in out and "initialised" not in out
  rc, out_one = _finish(single)
  assert rc == 0, out_one[-3000:]

  want, got = _losses(one), _losses(two)
  assert sorted(got) == sorted(want) and len(want) == 6 + 2  # 6 train steps, 2 evals
  rel = max(abs(got[k] - want[k]) / abs(want[k]) for k in want)
  print(f"2 processes x 2 devices vs 1 x 4: max relative loss difference {rel:.3g}")
  assert rel < RTOL, rel
