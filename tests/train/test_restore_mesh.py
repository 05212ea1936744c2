"""A checkpoint saved on 8 devices (data=2 x fsdp=4) restores on 4, 2 and 1 device(s).

Orbax restores the arrays straight into the new mesh's shardings (the trainer's abstract
state carries them). Training then continues as an uninterrupted run on the new mesh
does: the same losses to RTOL (a different mesh sums in another order, so not bitwise)
and the same data-iterator position at the end.
"""

import json
import os
import shutil
import signal

import pytest

from attnlab.train.metrics import read_metrics
from attnlab.train.trainer import KILL_AFTER_CHECKPOINT_ENV
from tests.train import subproc

TRAIN = dict(steps=8, checkpoint_every=4, log_every=1, eval_every=4, batch_size=8)
SAVED_ON = dict(data=2, fsdp=4, tensor=1)
RESTORED_ON = {4: dict(data=2, fsdp=2, tensor=1), 2: dict(data=1, fsdp=2, tensor=1),
               1: dict(data=1, fsdp=1, tensor=1)}
RTOL = 1e-6


def _losses(workdir):
  """{(step, key): value} of every train/eval loss logged in `workdir`."""
  return {(r["step"], k): r[k] for r in read_metrics(workdir) for k in r if k.endswith("/loss")}


def _iterator_state(workdir, step):
  """The data iterator's saved state (grain's JSON) in checkpoint `step` of `workdir`."""
  with open(os.path.join(workdir, "checkpoints", str(step), "data", "process_0-of-1.json")) as f:
    return json.load(f)


@pytest.mark.slow
def test_checkpoint_from_8_devices_continues_on_4_2_1(tmp_path):
  saved = str(tmp_path / "saved8")
  proc = subproc.start([dict(workdir=saved, train=TRAIN, mesh=SAVED_ON)], devices=8,
                       extra_env={KILL_AFTER_CHECKPOINT_ENV: "4"})
  rc, _, err = subproc.finish(proc)
  assert rc == -signal.SIGKILL, err[-3000:]

  procs = {}
  for n, mesh in RESTORED_ON.items():
    resumed = str(tmp_path / f"resumed{n}")
    shutil.copytree(saved, resumed)
    runs = [dict(workdir=resumed, train=TRAIN, mesh=mesh),
            dict(workdir=str(tmp_path / f"fresh{n}"), train=TRAIN, mesh=mesh)]
    procs[n] = subproc.start(runs, devices=n)
  for n, proc in procs.items():
    rc, results, err = subproc.finish(proc)
    assert rc == 0, err[-3000:]
    assert "resumed from step 4" in err
    assert [r["devices"] for r in results] == [n, n]
    resumed, fresh = str(tmp_path / f"resumed{n}"), str(tmp_path / f"fresh{n}")
    got, want = _losses(resumed), _losses(fresh)
    assert sorted(got) == sorted(want) and len(want) == 8 + 2
    after = [k for k in want if k[0] > 4]
    rel = max(abs(got[k] - want[k]) / abs(want[k]) for k in after)
    print(f"8 -> {n} device(s) {RESTORED_ON[n]}: steps 5-8 max relative loss difference "
          f"vs an uninterrupted {n}-device run {rel:.3g}")
    assert rel < RTOL, (n, rel)
    assert _iterator_state(resumed, 8) == _iterator_state(fresh, 8)
    assert _iterator_state(resumed, 4) == _iterator_state(saved, 4)
