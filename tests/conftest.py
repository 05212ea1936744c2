"""Test-session settings.

XLA's CPU backend compiles at LLVM -O0 during the tests (`--xla_backend_optimization_level=0`
appended to XLA_FLAGS before any backend starts; subprocess runners inherit it): the test
programs are tiny, so compiling them is most of the suite's time. Measured on a 2-core Xeon
(user CPU, same tests, default vs -O0): mega's oracle 51 s -> 30 s, a listops + text
classification training test 30 -> 17 s, the early-stopping resume and MoH router tests
74 -> 46 s; compiled temp-memory sizes (the cost contract's figure) are identical. Speed is
measured by `attnlab bench`, never here. ATTNLAB_TEST_XLA_OPT=1 keeps XLA's default.

At -O0 (jax 0.10.2) a gradient through `jnp.max` of a row that is then subtracted as the
softmax shift came out NaN in four jitted references (test_heads' non-causal ALiBi oracle,
sink softmax's reference) while XLA's default gave finite values; those shifts are now
`stop_gradient` (softmax does not depend on them, so the gradient is unchanged).

Every test process (pytest-xdist's workers, and the subprocesses the tests start:
`attnlab train`, `attnlab sweep` points, tests/train's runners) shares one persistent XLA
compilation cache, a fresh temp directory per test session (ATTNLAB_TEST_JAX_CACHE, set by
the controlling process before the workers start, removed at the end): the suite compiles
the same program many times over (a variant's init in its pattern, gradient and oracle
checks; a killed-and-restarted run; a sweep's second seed), and a cache hit loads it
instead. On tests/attention/test_sparse_static.py alone 63 of its 277 compilations were
hits. Checks that "nothing compiled" listen for lowering (which a cache hit still does),
not for the backend compile a hit skips.
"""

import os
import shutil
import tempfile

import jax

from tests.train.subproc import cache_env  # noqa: E402  (jax reads XLA_FLAGS at backend start)

if os.environ.get("ATTNLAB_TEST_XLA_OPT") != "1":
  _flags = os.environ.get("XLA_FLAGS", "")
  if "xla_backend_optimization_level" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_backend_optimization_level=0").strip()

_OWN_CACHE = "ATTNLAB_TEST_JAX_CACHE" not in os.environ
if _OWN_CACHE:  # the controller (or a plain pytest run): workers inherit the variable
  os.environ["ATTNLAB_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="attnlab-test-jax-cache-")
os.environ.update({k: v for k, v in cache_env().items() if k not in os.environ})
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_sessionfinish(session):
  """Removes the session's compilation cache (in the process that made it)."""
  if _OWN_CACHE and not hasattr(session.config, "workerinput"):
    shutil.rmtree(os.environ["ATTNLAB_TEST_JAX_CACHE"], ignore_errors=True)
