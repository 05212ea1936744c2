"""Helpers to run `tests.train.runner` in CPU-only subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cache_env() -> dict[str, str]:
  """JAX settings for a persistent compilation cache shared by test subprocesses: the
  directory ATTNLAB_TEST_JAX_CACHE, default a per-user temp dir, every program cached."""
  return {"JAX_COMPILATION_CACHE_DIR": os.environ.get(
              "ATTNLAB_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), f"attnlab-test-jax-cache-{os.getuid()}")),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def runner_env(devices: int = 1, extra: dict[str, str] | None = None) -> dict[str, str]:
  """Environment for a CPU-only runner with `devices` host devices.

  Runners share a persistent XLA compilation cache (ATTNLAB_TEST_JAX_CACHE, default
  a per-user temp dir): a restarted run then skips recompiling the same programs.
  """
  env = {**cache_env(), **os.environ}
  env["JAX_PLATFORMS"] = "cpu"
  flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
  if devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  env["XLA_FLAGS"] = " ".join(flags)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.update(extra or {})
  return env


def start(runs: list[dict], *, devices: int = 1, extra_env: dict[str, str] | None = None
          ) -> subprocess.Popen:
  """Starts `python -m tests.train.runner` on `runs` (see runner.py); returns the Popen."""
  return subprocess.Popen(
      [sys.executable, "-m", "tests.train.runner", json.dumps({"runs": runs})], cwd=REPO,
      env=runner_env(devices, extra_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, list[dict], str]:
  """Waits for `proc`; returns (returncode, parsed RESULT lines, stderr)."""
  out, err = proc.communicate(timeout=timeout)
  results = [json.loads(line[len("RESULT "):]) for line in out.splitlines() if line.startswith("RESULT ")]
  return proc.returncode, results, err


def load_script(name: str):
  """Imports scripts/NAME.py (not a package) as a module, so tests reuse a script's functions."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(f"scripts_{name}", os.path.join(REPO, "scripts", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
