"""A run SIGKILLed right after a checkpoint and restarted matches an uninterrupted run bitwise."""

import signal

from attnlab.train.metrics import read_metrics
from attnlab.train.trainer import KILL_AFTER_CHECKPOINT_ENV
from tests.train import subproc

# Dropout on, so the resumed run must also restore the rng stream; log_every=2 and
# checkpoint_every=4 so every logged window after the resume is a whole window.
TRAIN = dict(steps=12, checkpoint_every=4, log_every=2, eval_every=4, keep_checkpoints=3)


def _timeless(records):
  """Records without the wall-clock field."""
  return [{k: v for k, v in r.items() if k != "train/steps_per_sec"} for r in records]


def test_killed_and_resumed_run_equals_uninterrupted_bitwise(tmp_path):
  a_dir, b_dir = tmp_path / "a", tmp_path / "b"
  run_a, run_b = dict(workdir=str(a_dir), train=TRAIN), dict(workdir=str(b_dir), train=TRAIN)
  proc_a = subproc.start([run_a])
  proc_b = subproc.start([run_b], extra_env={KILL_AFTER_CHECKPOINT_ENV: "8"})
  rc_b, results_b, err_b = subproc.finish(proc_b)
  assert rc_b == -signal.SIGKILL, err_b[-3000:]
  assert not results_b
  killed = read_metrics(str(b_dir))
  assert killed and max(r["step"] for r in killed) == 8  # nothing after the checkpoint

  rc_b, results_b, err_b = subproc.finish(subproc.start([run_b]))
  assert rc_b == 0, err_b[-3000:]
  assert "resumed from step 8" in err_b
  rc_a, results_a, err_a = subproc.finish(proc_a)
  assert rc_a == 0, err_a[-3000:]

  records_a, records_b = _timeless(read_metrics(str(a_dir))), _timeless(read_metrics(str(b_dir)))
  assert [r["step"] for r in records_b] == [r["step"] for r in records_a]
  assert records_b == records_a  # floats round-trip through JSON exactly: bitwise equal
  assert results_b[0]["result"] == results_a[0]["result"]
  assert results_a[0]["result"]["step"] == 12
