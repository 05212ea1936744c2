"""End to end through `python -m attnlab.cli train` with a real smoke config (mqar).

One run uninterrupted on 1 device; one SIGKILLed after its step-3 checkpoint and
restarted (must match bitwise); one on 8 host devices as data=4 x tensor=2 (must
match within 1e-5 relative). Dropout is on so the resumed rng stream is checked too.
"""

import signal
import subprocess
import sys

import numpy as np
import pytest

from attnlab.train.metrics import read_metrics
from attnlab.train.trainer import KILL_AFTER_CHECKPOINT_ENV
from tests.train import subproc

CONFIG = "configs/mqar.py:smoke=True"
OVERRIDES = ["--config.model.dropout=0.1"]


def _cli(workdir, *extra, devices=1, env=None):
  cmd = [sys.executable, "-m", "attnlab.cli", "train", "--config", CONFIG, "--workdir", str(workdir),
         *OVERRIDES, *extra]
  return subprocess.Popen(cmd, cwd=subproc.REPO, env=subproc.runner_env(devices, env),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(proc):
  out, err = proc.communicate(timeout=300)
  return proc.returncode, out, err


def _timeless(records):
  return [{k: v for k, v in r.items() if k != "train/steps_per_sec"} for r in records]


@pytest.mark.slow
def test_cli_resume_bitwise_and_tensor_parallel_match(tmp_path):
  a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
  procs = [_cli(a), _cli(b, env={KILL_AFTER_CHECKPOINT_ENV: "3"}),
           _cli(c, "--config.mesh.data=4", "--config.mesh.tensor=2", devices=8)]
  (rc_a, _, err_a), (rc_b, _, err_b), (rc_c, _, err_c) = [_wait(p) for p in procs]
  assert rc_a == 0, err_a[-3000:]
  assert rc_b == -signal.SIGKILL, err_b[-3000:]
  assert rc_c == 0, err_c[-3000:]
  rc_b, _, err_b = _wait(_cli(b))
  assert rc_b == 0, err_b[-3000:]
  assert "resumed from step 3" in err_b

  records_a = _timeless(read_metrics(str(a)))
  assert records_a and records_a[-1]["step"] == 6 and "eval/loss" in records_a[-1]
  assert _timeless(read_metrics(str(b))) == records_a

  records_c = _timeless(read_metrics(str(c)))
  assert [r["step"] for r in records_c] == [r["step"] for r in records_a]
  pairs = np.array([(rc[k], ra[k]) for rc, ra in zip(records_c, records_a)
                    for k in ra if k.endswith("/loss")])
  rel = np.abs(pairs[:, 0] - pairs[:, 1]) / np.abs(pairs[:, 1])
  print(f"mqar smoke, data=4 x tensor=2 vs 1 device: max relative loss difference {rel.max():.3g}")
  assert rel.max() < 1e-5
