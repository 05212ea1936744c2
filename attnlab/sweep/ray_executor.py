"""The Ray executor of `attnlab sweep --executor ray`: each point a Ray task with reserved
resources, running the same resumable `attnlab train` subprocess as the local executor and
writing into the same point directories (which every node must see: a shared filesystem).

Ray is an optional extra (`pip install -e ".[ray]"`). A worker that dies mid-point (killed,
out of memory, a lost node) is retried by Ray up to WORKER_RETRIES times; the retry resumes
from the point's last checkpoint, and the training subprocess dies with its worker, so no
orphan trains beside the retry. A failed training attempt is retried inside the task, as
locally (`--retries`).
"""

from __future__ import annotations

import os
import traceback
from typing import Any, Iterator, Sequence

from attnlab.sweep.point import ERROR_FILE, run_point_attempts

RAY_EXTRA = 'pip install -e ".[ray]"'
WORKER_RETRIES = 3  # Ray-level retries of a point whose worker died


def require_ray():
  """Returns the ray module; without it, a ValueError naming the extra (one line)."""
  try:
    import ray
  except ImportError:
    raise ValueError(f"--executor ray needs Ray, an optional extra: {RAY_EXTRA}") from None
  return ray


def _failed(task, error: BaseException) -> dict[str, Any]:
  """A point whose Ray task failed for good (its worker died WORKER_RETRIES + 1 times)."""
  os.makedirs(task.workdir, exist_ok=True)
  with open(os.path.join(task.workdir, ERROR_FILE), "w") as f:
    f.write("".join(traceback.format_exception(error)))
  first = str(error).strip().splitlines()
  return {"status": "failed", **task.info, "error": f"{type(error).__name__}: {first[0] if first else ''}",
          "attempts": task.attempts}


def run_ray(tasks: Sequence, *, address: str | None = None, cpus_per_point: float = 1.0,
            gpus_per_point: float = 0.0) -> Iterator[tuple[Any, dict[str, Any]]]:
  """Submits every task (`attnlab.sweep.local.PointTask`) as a Ray task reserving
  `cpus_per_point` CPUs and `gpus_per_point` GPUs; yields (task, result) as they finish.

  Connects to the cluster at `address`, else starts a local one (no dashboard) and shuts
  it down at the end."""
  ray = require_ray()
  started = not ray.is_initialized()
  if started:
    local = {} if address else {"include_dashboard": False}  # a cluster's dashboard is its own
    ray.init(address=address, log_to_driver=False, **local)
  try:
    remote = ray.remote(run_point_attempts).options(
        num_cpus=cpus_per_point, num_gpus=gpus_per_point, max_retries=WORKER_RETRIES, retry_exceptions=False)
    refs = {remote.remote(t.spec, list(t.overrides), t.workdir, t.info, t.attempts): t for t in tasks}
    pending = list(refs)
    while pending:
      ready, pending = ray.wait(pending, num_returns=1)
      task = refs[ready[0]]
      try:
        result = ray.get(ready[0])
      except Exception as e:  # RayTaskError, WorkerCrashedError: the task failed for good
        result = _failed(task, e)
      yield task, result
  finally:
    if started:
      ray.shutdown()
