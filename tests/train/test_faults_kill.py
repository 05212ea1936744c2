"""SIGKILL at a few moments of a run (mid-checkpoint-write, mid-step, mid-eval), each restarted
with the same command and environment: every run ends bitwise identical to an uninterrupted one.

The CI-sized version of scripts/fault_injection.py's kill cases (its functions, fixed
moments instead of 20 random ones; see experiments/faults/README.md for the full run).
"""

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from attnlab.train.fault_hooks import KILL_AT_ENV, KILL_MARKER
from tests.train import subproc

faults = subproc.load_script("fault_injection")
damage = subproc.load_script("checkpoint_damage")
# (phase, step, delay): the kill at delay 0 right after save 8 starts lands while orbax's
# background write is in flight, so its temporary directory is left behind.
KILLS = [("checkpoint", 8, 0.0), ("step", 6, 0.005), ("eval", 12, 0.0)]


def test_killed_runs_restart_and_end_identical_to_an_uninterrupted_run(tmp_path):
  ref = str(tmp_path / "reference")
  jobs = {"reference": (faults.run_spec(ref), None)}
  for phase, step, delay in KILLS:
    jobs[phase] = (faults.run_spec(str(tmp_path / phase)), {KILL_AT_ENV: f"{phase}:{step}:{delay}"})
  with ThreadPoolExecutor(2) as pool:  # two subprocesses at a time (they share the compile cache)
    outs = dict(zip(jobs, pool.map(lambda job: faults.run_until_done(*job, max_attempts=3), jobs.values())))
  assert outs["reference"]["rc"] == 0 and outs["reference"]["kills"] == 0, outs["reference"]["stderr"][-2000:]
  for phase, step, _ in KILLS:
    out = outs[phase]
    assert out["rc"] == 0 and out["kills"] == 1 and out["attempts"] == 2, (phase, out["stderr"][-2000:])
    assert faults.differences(ref, str(tmp_path / phase)) == "", phase
    assert out["partial_at_end"] == []  # no unfinished save left once the run is done
  # The mid-write kill left orbax's temporary dir; the restart ignored it (resumed from 4)
  # and removed it.
  assert outs["checkpoint"]["partial_after_kill"] == ["8.orbax-checkpoint-tmp"]
  assert "resumed from step 4" in outs["checkpoint"]["stderr"]
  assert os.path.exists(os.path.join(str(tmp_path / "step"), KILL_MARKER))  # fired once, then ran on
  # Canaries for the comparison: one metric 1 ulp off, and one changed byte in the final state.
  canary = str(tmp_path / "canary")
  shutil.copytree(ref, canary)
  records = faults.read_records(canary)
  last_eval = [r for r in records if "eval/loss" in r][-1]
  last_eval["eval/loss"] = float(np.nextafter(last_eval["eval/loss"], np.inf))
  with open(os.path.join(canary, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  assert faults.differences(ref, canary).startswith("metrics record")
  shutil.copy(os.path.join(ref, "metrics.jsonl"), os.path.join(canary, "metrics.jsonl"))
  damage.silently_corrupt(os.path.join(canary, "checkpoints", "16"))
  assert faults.differences(ref, canary).startswith("final state")
