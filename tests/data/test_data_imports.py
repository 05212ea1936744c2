"""`import attnlab.data` stays light: the generators are numpy-only (no flax, jax or grain)."""

import subprocess
import sys


def test_import_attnlab_data_imports_no_flax():
  code = ("import sys, attnlab.data; "
          "bad = [m for m in ('flax', 'jax', 'grain') if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True)
