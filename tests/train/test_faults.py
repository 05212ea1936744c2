"""In-process fault tests of the trainer: unreadable checkpoints, a full disk, NaN injection.

Each run is compared with one uninterrupted reference run by scripts/fault_injection.py's
`differences` (metrics.jsonl without wall-clock fields, and the final train state read
with orbax's own StandardCheckpointer, bit for bit). The SIGKILL cases are in
test_faults_kill.py.
"""

import os
import shutil

import numpy as np
import pytest

from attnlab.train import trainer
from attnlab.train.checkpoint import (UNREADABLE_DIR, CheckpointCorruptError, CheckpointWriteError,
                                      NoRestorableCheckpointError)
from attnlab.train.fault_hooks import INJECT_NAN_ENV
from attnlab.train.nonfinite import GRAD_FINITE, first_nonfinite
from tests.train import subproc
from tests.train.runner import enospc_during_save
from tests.train.standins import build_standins, standin_config

faults = subproc.load_script("fault_injection")
damage = subproc.load_script("checkpoint_damage")
# Four checkpoints kept (4, 8, 12, 16), so three can be damaged and the fourth restored.
TRAIN = dict(faults.TRAIN, keep_checkpoints=4)


def _train(workdir, **overrides):
  config = standin_config(**{**TRAIN, **overrides})
  task, model = build_standins(config)
  return trainer.train(config, str(workdir), task=task, model=model)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted 16-step run's workdir."""
  workdir = tmp_path_factory.mktemp("reference")
  _train(workdir)
  return str(workdir)


def test_unreadable_checkpoints_are_skipped_and_the_run_finishes_identically(reference, tmp_path, capfd):
  import orbax.checkpoint as ocp
  work = str(tmp_path / "run")
  shutil.copytree(reference, work)
  ckpt = os.path.join(work, "checkpoints")
  # 16: a flipped bit orbax restores without error; 12: a truncated array file; 8: no data item.
  damage.silently_corrupt(os.path.join(ckpt, "16"))
  damage.truncate_array_file(os.path.join(ckpt, "12"))
  damage.remove_item(os.path.join(ckpt, "8"))
  # Canary for the fingerprint: orbax alone returns step 16 without complaint, but changed.
  raw = ocp.StandardCheckpointer().restore(os.path.join(ckpt, "16", "state"))
  assert damage.flat_leaves(raw).keys() == faults.saved_state(reference, 16).keys()
  assert any(v.tobytes() != faults.saved_state(reference, 16)[k].tobytes() for k, v in damage.flat_leaves(raw).items())
  # Canary for the fallback: without it the run fails on step 16.
  with pytest.raises(CheckpointCorruptError, match="checkpoint step 16: .* different checksum"):
    _train(work, restore_fallback=False)
  capfd.readouterr()

  _train(work)
  err = capfd.readouterr().err
  for step, exc in ((16, "CheckpointCorruptError: "), (12, ""), (8, "")):
    assert f"WARNING: checkpoint step {step} in {ckpt} could not be restored ({exc}" in err, err[-3000:]
  assert "resumed from step 4" in err
  assert faults.differences(reference, work) == ""
  assert len(os.listdir(os.path.join(work, UNREADABLE_DIR))) == 3  # kept for inspection

  # None restorable: a clear error listing every step tried.
  gone = str(tmp_path / "gone")
  shutil.copytree(reference, gone)
  for step in (4, 8, 12, 16):
    damage.remove_item(os.path.join(gone, "checkpoints", str(step)))
  with pytest.raises(NoRestorableCheckpointError, match=r"step 16 \(\w+\), step 12 .*step 4 \(\w+\)"):
    _train(gone)
  assert faults.step_dirs(gone) == [4, 8, 12, 16]  # nothing moved when nothing restores


def test_full_disk_during_a_save_is_a_clear_error_and_the_previous_checkpoint_survives(reference, tmp_path, capfd):
  work = str(tmp_path / "run")
  # keep_checkpoints=1: were the old checkpoint deleted before the new one is complete, it would be lost.
  with enospc_during_save(8), pytest.raises(CheckpointWriteError) as info:
    _train(work, keep_checkpoints=1)
  message = str(info.value)
  assert "\n" not in message
  assert f"could not write checkpoint step 8 to {os.path.join(work, 'checkpoints')}" in message
  assert "No space left on device" in message and "previous checkpoint (step 4) is intact" in message
  cause = info.value.__cause__  # the canary: the failure really came from a write inside save 8
  assert isinstance(cause, OSError) and cause.errno == 28 and "8.orbax-checkpoint-tmp" in str(cause)
  assert faults.step_dirs(work) == [4] and faults.partial_dirs(work)
  assert not faults.nonfinite_saved(work) and faults.saved_state(work, 4)
  capfd.readouterr()

  _train(work, keep_checkpoints=1)  # disk freed: the same command resumes from step 4
  assert "resumed from step 4" in capfd.readouterr().err
  assert faults.partial_dirs(work) == []  # the unfinished save's temporary dir was removed
  assert faults.differences(reference, work) == ""


def _loss_only(host_metrics, names=None):
  """The trainer's non-finite check as it was before gradient flags (the canary)."""
  return first_nonfinite([(s, {k: v for k, v in m.items() if k != GRAD_FINITE}) for s, m in host_metrics])


@pytest.mark.parametrize("target,what", [("grad:['q']", r"grad of params\['q'\]"), ("loss", "loss")])
def test_injected_nan_stops_the_run_naming_step_and_tensor_and_nothing_nonfinite_is_saved(
    tmp_path, monkeypatch, target, what):
  # Step 8 is a checkpoint step: its loss is computed before the update, so only the
  # gradient flags can stop the NaN parameters of a gradient fault from being saved.
  monkeypatch.setenv(INJECT_NAN_ENV, f"{target}@8")
  with pytest.raises(FloatingPointError, match=rf"^non-finite {what} at step 8 \(loss="):
    _train(tmp_path / "run")
  assert faults.step_dirs(str(tmp_path / "run")) == [4]
  assert faults.nonfinite_saved(str(tmp_path / "run")) == []
  if target == "loss":
    return
  # 'q' is not the first leaf (embed, k, ... come before it): the name is the poisoned one.
  monkeypatch.setattr(trainer, "first_nonfinite", _loss_only)
  _train(tmp_path / "canary", steps=8)
  bad = faults.nonfinite_saved(str(tmp_path / "canary"))
  assert bad and all(b.startswith("step 8:") for b in bad)
  assert np.isfinite(faults.saved_state(str(tmp_path / "canary"), 4)["['params']['q']"]).all()
