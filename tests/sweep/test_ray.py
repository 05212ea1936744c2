"""`attnlab sweep --executor ray`: points as Ray tasks, and a worker killed mid-point.

Skipped without ray (an optional extra, not installed in CI)."""

import os
import re
import signal
import threading
import time

import pandas as pd
import pytest

from attnlab import cli
from tests.train.subproc import runner_env

ray = pytest.importorskip("ray", reason='ray is an optional extra (pip install -e ".[ray]"); not installed')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "mqar.py") + ":smoke=True"
ATTEMPT = re.compile(r"attnlab sweep: attempt \d+ of \d+ \(pid (\d+) ")


def _kill_first_worker_once_training(log_path: str, killed: list, stop: threading.Event) -> None:
  """SIGKILLs the Ray worker running the point of `log_path` once its training subprocess
  has started (the trainer logged "initialised"); records the pid in `killed`."""
  while not stop.is_set():
    if os.path.exists(log_path):
      with open(log_path) as f:
        text = f.read()
      pids = ATTEMPT.findall(text)
      if pids and "initialised" in text:
        os.kill(int(pids[0]), signal.SIGKILL)
        killed.append(int(pids[0]))
        return
    time.sleep(0.05)


def test_ray_sweep_retries_a_killed_worker_and_completes(tmp_path, monkeypatch):
  for key, value in runner_env().items():  # the local Ray's workers inherit this environment
    monkeypatch.setenv(key, value)
  root = str(tmp_path / "sweep")
  log = os.path.join(root, "seed=0", "train.log")
  killed, stop = [], threading.Event()
  watcher = threading.Thread(target=_kill_first_worker_once_training, args=(log, killed, stop), daemon=True)
  watcher.start()
  try:
    code = cli.main(["sweep", "--config", SMOKE, "--workdir", root, "--axis", "seed=0,1",
                     "--config.train.steps=40", "--executor", "ray", "--cpus-per-point", "1"])
  finally:
    stop.set()
  assert killed, "the watcher never saw the point training"
  assert code == 0
  df = pd.read_csv(os.path.join(root, "results.csv"))
  assert df.status.tolist() == ["done", "done"] and (df.step == 40).all() and df.seed.tolist() == [0, 1]
  with open(log) as f:
    text = f.read()
  pids = [int(p) for p in ATTEMPT.findall(text)]
  assert pids[0] == killed[0] and len(set(pids)) >= 2  # Ray ran the point again in another worker
  assert sum(ln.startswith("{") for ln in text.splitlines()) == 1
  assert pd.read_csv(os.path.join(root, "summary.csv")).seeds.tolist() == [2]
