"""The table of a fuzz run: per class of input, how many examples got each outcome.

  python -m tests.fuzz_report FILE   (FILE: the JSON lines of ATTNLAB_FUZZ_REPORT, tests/test_fuzz_input.py)

Prints a markdown table (class, examples, "error exit 2", "ran", one sample error line).
"""

from __future__ import annotations

import collections
import json
import sys


def table(lines: list[dict]) -> str:
  """Markdown rows per `kind`: counts of each outcome and the first error line seen."""
  counts = collections.defaultdict(collections.Counter)
  sample = {}
  for rec in lines:
    counts[rec["kind"]][rec["outcome"]] += 1
    if rec.get("error") and rec["kind"] not in sample:
      sample[rec["kind"]] = rec["error"].removeprefix("attnlab: error: ")[:110]
  rows = ["| class of input | examples | error, exit 2 | ran (setup passed) | a sample error line |",
          "|---|---:|---:|---:|---|"]
  for kind in sorted(counts):
    c = counts[kind]
    text = sample.get(kind, "").replace("|", "\\|")
    rows.append(f"| {kind} | {sum(c.values())} | {c['error exit 2']} | {c['ran']} | {text} |")
  total = collections.Counter()
  for c in counts.values():
    total.update(c)
  rows.append(f"| **all** | {sum(total.values())} | {total['error exit 2']} | {total['ran']} | |")
  return "\n".join(rows)


if __name__ == "__main__":
  with open(sys.argv[1]) as f:
    print(table([json.loads(line) for line in f if line.strip()]))
