"""Bad input as one line on stderr with exit code 2 (shared by `attnlab.cli` and `attnlab.sweep`).

Imports nothing heavy, so every command-line module can use it without importing another
(the sweep's command used to import `attnlab.cli`, which imports the sweep).
"""

from __future__ import annotations

import sys

from attnlab.registry import UnknownNameError

# What a bad config or command line raises (unknown names, bad values, missing files); the
# commands report these in one line with exit code 2 instead of a traceback.
INPUT_ERRORS = (ValueError, UnknownNameError, FileNotFoundError, TypeError)

# What setting up (building host data and abstract shapes, nothing compiled) raises for sizes
# no machine holds (a batch of 10**21, a d_model past int32): also bad input, caught around setup only.
SIZE_ERRORS = (OverflowError, MemoryError)

INPUT_ERROR_EXIT = 2

# A run that started but stopped on a fault (a non-finite loss or gradient, a checkpoint
# that could not be written or read): one line on stderr, this exit code.
RUN_FAULT_EXIT = 1

# ... and its traceback goes to this file in the run's workdir (a sweep point's error.txt
# includes it).
RUN_FAULT_TRACEBACK = "traceback.txt"


def fail(message: str, code: int = INPUT_ERROR_EXIT) -> int:
  """Prints "attnlab: error: MESSAGE" (on one line: newlines become spaces) to stderr; returns `code`."""
  print(f"attnlab: error: {' '.join(str(message).split())}", file=sys.stderr)
  return code
