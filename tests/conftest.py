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

Subprocesses the tests start (`attnlab train`, `attnlab sweep` points, tests/train's
runners) share a persistent XLA compilation cache, `tests.train.subproc.cache_dir()`: a
killed-and-restarted run, or a sweep's second seed, then loads the programs the first
one compiled instead of compiling them again. The test processes themselves keep JAX's
in-memory cache only.
"""

import os

import jax

from tests.train.subproc import cache_env  # noqa: E402  (jax reads XLA_FLAGS at backend start)

if os.environ.get("ATTNLAB_TEST_XLA_OPT") != "1":
  _flags = os.environ.get("XLA_FLAGS", "")
  if "xla_backend_optimization_level" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_backend_optimization_level=0").strip()

os.environ.update({k: v for k, v in cache_env().items() if k not in os.environ})
jax.config.update("jax_compilation_cache_dir", None)  # this process: in-memory cache only
