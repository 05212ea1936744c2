"""One sweep point: its validation and identity (config hash, seed, params), and its training
run as an `attnlab train` subprocess, with retries, a result file and an error file.

Used by both executors (`attnlab.sweep.local`, `attnlab.sweep.ray_executor`) and by
`attnlab reproduce`. A point is finished when `<workdir>/result.json` exists (written
atomically, so a killed sweep never leaves half a result); a point whose last attempt failed
has `<workdir>/error.txt` (the traceback) and no result.json, so a rerun retries it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import traceback
from typing import Any, Sequence

from attnlab.errors import INPUT_ERRORS, RUN_FAULT_TRACEBACK

RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
LOG_FILE = "train.log"


def config_hash(config: Any) -> str:
  """A stable 12-hex-digit hash of a resolved config (its sorted JSON), equal across machines."""
  text = config.to_json_best_effort(sort_keys=True) if hasattr(config, "to_json_best_effort") else json.dumps(
      config, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def inspect_point(config_spec: str, overrides: Sequence[str]) -> dict[str, Any]:
  """Loads and validates one point's config: {"config_hash", "seed", "params"}, or
  {"config_hash", "seed", "error": the one-line reason} when it cannot run. A config key
  that does not exist raises."""
  from attnlab.config_loading import checked_setup, load_config
  from attnlab.train.state import param_count
  config = load_config(config_spec, overrides)  # unknown keys raise here
  identity = {"config_hash": config_hash(config), "seed": int(config.get("seed", 0))}
  try:
    run = checked_setup(config, config_spec)  # every check before compiling (the point then trains in its own process)
  except INPUT_ERRORS as e:
    return {**identity, "error": str(e).splitlines()[0]}
  return {**identity, "params": param_count(run.abstract)}


def check_point(config_spec: str, overrides: Sequence[str]) -> str | None:
  """Loads and validates one point's config; None when it can run, else the one-line reason.

  A config key that does not exist raises (it is a typo in the sweep, not a result)."""
  return inspect_point(config_spec, overrides).get("error")


# Runs argv[2:] (exec) after asking Linux to SIGKILL it when its parent (pid argv[1]) dies, so a
# killed sweep or Ray worker leaves no orphan training beside the rerun. A prefix instead of a
# preexec_fn: forking the multithreaded (JAX) sweep to run Python code in the child can deadlock.
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
  ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  if os.getppid() != int(sys.argv[1]):
    sys.exit("attnlab sweep: the sweep died before its point started")
os.execv(sys.argv[2], sys.argv[2:])
"""


def _dying_with_parent(cmd: Sequence[str]) -> list[str]:
  """`cmd` prefixed so that it dies with this process (see _DIE_WITH_PARENT)."""
  return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *cmd]


def _atomic_json(path: str, obj: dict) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f)
  os.replace(path + ".tmp", path)


def steps_per_s(workdir: str) -> float | None:
  """The median of the run's logged train/steps_per_sec (the compile-time window is an outlier)."""
  from attnlab.train.metrics import read_metrics
  rates = [r["train/steps_per_sec"] for r in read_metrics(workdir) if "train/steps_per_sec" in r]
  return statistics.median(rates) if rates else None


def _attempt_traceback(log_path: str, offset: int) -> str:
  """The stderr of the last attempt (from `offset` in the log): from its last traceback on,
  or its last 50 lines when it has none (a one-line error, a kill)."""
  with open(log_path) as f:
    f.seek(offset)
    lines = f.read().splitlines()
  starts = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
  return "\n".join(lines[starts[-1]:] if starts else lines[-50:])


def run_point(config_spec: str, overrides: Sequence[str], workdir: str,
              info: dict[str, Any] | None = None) -> dict[str, Any]:
  """Trains one point in a subprocess (`python -m attnlab train`), log in workdir/train.log.

  Returns {"status": "done", **info, **final metrics, "eval_examples", "wall_s",
  "steps_per_s"} (also written to workdir/result.json, which marks the point finished) or
  {"status": "failed", "error", "wall_s"} with the traceback in workdir/error.txt."""
  os.makedirs(workdir, exist_ok=True)
  cmd = [sys.executable, "-m", "attnlab", "train", "--config", config_spec, "--workdir", workdir, *overrides]
  log_path = os.path.join(workdir, LOG_FILE)
  start, started_at = time.perf_counter(), time.time()
  with open(log_path, "a") as log:
    offset = log.tell()
    proc = subprocess.run(_dying_with_parent(cmd), stdout=subprocess.PIPE, stderr=log, text=True)
    log.write(proc.stdout)
  wall = time.perf_counter() - start
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode != 0 or not lines:
    text = _attempt_traceback(log_path, offset)
    saved = os.path.join(workdir, RUN_FAULT_TRACEBACK)  # a fault's traceback, saved by `attnlab train`
    if os.path.exists(saved) and os.path.getmtime(saved) >= started_at - 1:
      with open(saved) as f:
        text = f.read().rstrip() + "\n" + text
    with open(os.path.join(workdir, ERROR_FILE), "w") as f:
      f.write(f"{' '.join(cmd)}\nexit {proc.returncode}\n{text}\n")
    tail = text.splitlines()[-1] if text else ""
    return {"status": "failed", **(info or {}), "error": f"exit {proc.returncode}: {tail}", "wall_s": wall}
  final = json.loads(lines[-1])
  result = {"status": "done", **(info or {}), **final, "eval_examples": final.get("eval/examples"),
            "wall_s": wall, "steps_per_s": steps_per_s(workdir)}
  _atomic_json(os.path.join(workdir, RESULT_FILE), result)
  if os.path.exists(os.path.join(workdir, ERROR_FILE)):
    os.remove(os.path.join(workdir, ERROR_FILE))  # an earlier attempt's; its traceback stays in train.log
  return result


def run_point_attempts(config_spec: str, overrides: Sequence[str], workdir: str,
                       info: dict[str, Any] | None = None, attempts: int = 1) -> dict[str, Any]:
  """`run_point` up to `attempts` times until it is done (each retry resumes from the last
  checkpoint); an exception here is a failed attempt with its traceback in error.txt.
  Returns the last attempt's result, with "attempts" (how many ran; also in result.json)."""
  result: dict[str, Any] = {}
  for attempt in range(1, max(attempts, 1) + 1):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, LOG_FILE), "a") as log:
      log.write(f"attnlab sweep: attempt {attempt} of {attempts} (pid {os.getpid()} on {socket.gethostname()})\n")
    try:
      result = run_point(config_spec, overrides, workdir, {**(info or {}), "attempts": attempt})
    except Exception as e:  # the sweep's own failure at this point (disk, permissions): recorded, not fatal
      with open(os.path.join(workdir, ERROR_FILE), "w") as f:
        f.write(traceback.format_exc())
      result = {"status": "failed", **(info or {}), "error": f"{type(e).__name__}: {e}", "wall_s": 0.0,
                "attempts": attempt}
    if result["status"] == "done":
      break
  return result
