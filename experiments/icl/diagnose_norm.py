"""Why does a trained linear-attention model keep its error on prompts longer than N?

For each finished run under WORKDIR, and each n in (N // 2, N, 2N): the norm of the
attention layer's output at the query token against the norm of the query's own embedding
(the residual the attention output is added to), and the least-squares slope of the
prediction on the true y. An unnormalised sum over the pairs (linear attention) grows
about linearly in n; if the slope stays near its value at N while the attention output
grows, the scale-invariant final RMSNorm of the backbone (h / rms(h) before the readout)
is dividing the growth out.

  python experiments/icl/diagnose_norm.py experiments/icl/small  ->  WORKDIR/diagnose_norm.csv
"""

from __future__ import annotations

import json
import os
import sys

import jax
import ml_collections
import numpy as np
import pandas as pd

from attnlab.train.checkpoint import Checkpointer
from attnlab.train.trainer import setup


def _find(tree, suffix):
  """The first captured intermediate whose path ends with `suffix` (a tuple of names)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, value in flat:
    names = tuple(getattr(p, "key", getattr(p, "name", None)) for p in path)
    names = tuple(n for n in names if isinstance(n, str))
    if names[-len(suffix) - 1:-1] == suffix:
      return value
  raise KeyError(suffix)


def diagnose(run_dir: str) -> list[dict]:
  """Rows (run, n, attention / embedding norm ratio at the query, prediction slope)."""
  with open(os.path.join(run_dir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  run = setup(config)
  ckpt = Checkpointer(os.path.abspath(run_dir), keep=None)
  try:
    state = ckpt.restore(run.abstract, step=ckpt.latest_step())
  finally:
    ckpt.close()
  n_train = int(config.task.train_examples)
  rows = []
  for batch in run.eval_batches:
    n = int(batch["num_examples"][0])
    if n not in (n_train // 2, n_train, run.task.slots):
      continue
    pred, inter = run.model.apply(state.variables(), batch["inputs"], capture_intermediates=True,
                                  mutable=["intermediates"])
    inter = inter["intermediates"]
    emb = np.asarray(_find(inter, ("embedding",)))[:, -1]
    block = np.asarray(_find(inter, ("backbone", "layer_0")))[:, -1]
    attn = block - emb  # attention-only layer: the block adds the attention output to x
    y = np.asarray(batch["targets"])
    rows.append({"run": os.path.basename(run_dir), "variant": config.model.variant,
                 "heads": int(config.model.num_heads), "n": n,
                 "attn_over_embed": float(np.mean(np.linalg.norm(attn, axis=-1)
                                                  / np.linalg.norm(emb, axis=-1))),
                 "slope": float(np.dot(np.asarray(pred), y) / np.dot(y, y))})
  return rows


def main(workdir: str) -> None:
  rows = []
  for name in sorted(os.listdir(workdir)):
    if os.path.isfile(os.path.join(workdir, name, "result.json")) and name.endswith("seed=0"):
      rows += diagnose(os.path.join(workdir, name))
  frame = pd.DataFrame(rows).groupby(["run", "variant", "heads", "n"]).mean().reset_index()
  frame.to_csv(os.path.join(workdir, "diagnose_norm.csv"), index=False)
  print(frame.to_string(index=False))


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "experiments/icl/small")
