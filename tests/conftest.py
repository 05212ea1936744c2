"""Test-session settings.

XLA's CPU backend compiles at LLVM -O0 during the tests (`--xla_backend_optimization_level=0`
appended to XLA_FLAGS before any backend starts; subprocess runners inherit it): the test
programs are tiny, so compiling them is most of the suite's time. Measured on a 2-core Xeon
(user CPU, same tests, default vs -O0): mega's oracle 51 s -> 30 s, a listops + text
classification training test 30 -> 17 s, the early-stopping resume and MoH router tests
74 -> 46 s; compiled temp-memory sizes (the cost contract's figure) are identical. Speed is
measured by `attnlab bench`, never here. ATTNLAB_TEST_XLA_OPT=1 keeps XLA's default.
"""

import os

if os.environ.get("ATTNLAB_TEST_XLA_OPT") != "1":
  _flags = os.environ.get("XLA_FLAGS", "")
  if "xla_backend_optimization_level" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_backend_optimization_level=0").strip()
