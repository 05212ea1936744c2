"""Abnar & Zuidema (2020)'s claim, checked: do rollout and flow agree better than raw
attention with what the model actually uses?

  python experiments/analysis/abnar_check.py RUN [RUN ...] [--inputs 32]

Each RUN is an induction-task workdir (experiments/analysis/induction_config.py, any
variant whose weights are non-negative). For each eval input the explained position is
the last (the query the task scores); for each earlier input position j:
  raw      last layer's head-mean attention A_L[pos, j]
  rollout  `attnlab.analysis.rollout.rollout` row pos
  flow     `attnlab.analysis.rollout.flow` row pos
against two references:
  ablation leave-one-token-out: the increase of the target's loss when token j is
           replaced by the unused id 0 (the task's padding id)
  grad     input gradient x input: |sum_d dlogp/de_jd * e_jd| on the token embeddings
Spearman's rho over positions j < pos, per input, averaged over the inputs (NaN rows,
from constant rankings, skipped). Prints a markdown table and JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

from attnlab.analysis import capture as C
from attnlab.analysis.analyze_cli import _first_examples, load_run_config, restore_variables
from attnlab.analysis.rollout import flow, rollout
from attnlab.models.adapters import TokenEmbedding
from attnlab.train.checkpoint import Checkpointer
from attnlab.train.trainer import setup


def _logp_target(logits, targets, pos):
  """log p(target) at `pos`: logits [B, T, V], targets [B, T] -> [B]."""
  lp = jax.nn.log_softmax(logits[:, pos].astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(lp, targets[:, pos, None], axis=-1)[:, 0]


def _apply_with_embedding_delta(model, variables, tokens, delta):
  """The model's logits with `delta` [B, T, d] added to the token embeddings, and those embeddings."""
  seen = {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, TokenEmbedding) and context.method_name == "__call__":
      seen["e"] = out
      return out + delta
    return out

  with nn.intercept_methods(interceptor):
    logits = model.apply(variables, tokens, deterministic=True)
  return logits, seen["e"]


def _log(msg):
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_run(workdir: str, n: int):
  """(config, run, latest step, its variables, the first n eval examples) of a workdir."""
  _log(f"{workdir}: setup")
  config = load_run_config(workdir)
  run = setup(config)
  ckpt = Checkpointer(workdir, keep=None)
  step = ckpt.latest_step()
  ckpt.close()
  return config, run, step, restore_variables(run, workdir, step), _first_examples(run.eval_batches, n)


COLUMNS = [f"{m}_vs_{r}" for r in ("ablation", "grad") for m in ("raw", "rollout", "flow")]


def print_table(rows: list, acc_key: str, acc_label: str, cell=lambda r, c: f"{r[c]:.3f}") -> None:
  """The markdown table of `check_run` rows: run, variant, accuracy, the six correlations."""
  print(f"| run | variant | {acc_label} | " + " | ".join(COLUMNS) + " |")
  print("|" + "---|" * (3 + len(COLUMNS)))
  for r in rows:
    if "refused" in r:
      print(f"| {r['workdir']} | refused: {r['refused']} |")
      continue
    print(f"| {r['workdir']} | {r['variant']} | {r[acc_key]:.2f} | " + " | ".join(cell(r, c) for c in COLUMNS) + " |")


def run_all(check, argv=None) -> list:
  """Parses `RUN [RUN ...] [--inputs N]` and returns [check(run, N) for each run]."""
  p = argparse.ArgumentParser()
  p.add_argument("workdirs", nargs="+")
  p.add_argument("--inputs", type=int, default=32)
  args = p.parse_args(argv)
  return [check(w, args.inputs) for w in args.workdirs]


def check_run(workdir: str, n: int) -> dict:
  config, run, step, variables, batch = load_run(workdir, n)
  tokens, targets = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
  b, t = tokens.shape
  pos = t - 1
  model = run.model
  infos = C.layer_infos(model.cfg)
  reason = C.refusal(infos, kinds=("probability", "nonnegative"))
  if reason:
    return {"workdir": workdir, "refused": reason}

  _log("capture")
  weights = jax.device_get(jax.jit(lambda v, x: C.capture(model, v, x))(variables, tokens)["weights"])
  # leave-one-token-out: row (i, j) = input i with token j replaced by 0
  masked = np.repeat(tokens[:, None], pos, axis=1)
  masked[:, np.arange(pos), np.arange(pos)] = 0
  logp = jax.jit(lambda v, x, y: _logp_target(model.apply(v, x, deterministic=True), y, pos))
  base = np.asarray(logp(variables, tokens, targets))
  abl = np.asarray(logp(variables, masked.reshape(-1, t), np.repeat(targets, pos, axis=0))).reshape(b, pos)
  ablation = base[:, None] - abl  # loss increase
  _log("gradient x input")
  # gradient x input on the embeddings
  d_model = model.cfg.d_model

  def target_sum(delta, v, x, y):
    logits, e = _apply_with_embedding_delta(model, v, x, delta)
    return jnp.sum(_logp_target(logits, y, pos)), e

  grads, emb = jax.jit(jax.grad(target_sum, has_aux=True))(jnp.zeros((b, t, d_model)), variables, tokens, targets)
  gxi = np.abs(np.sum(np.asarray(grads) * np.asarray(emb), axis=-1))[:, :pos]

  _log("rollout and flow")
  scores = {"raw": [], "rollout": [], "flow": []}
  for i in range(b):
    one = [np.asarray(w[i]) for w in weights]
    scores["raw"].append(one[-1].mean(0)[pos, :pos])
    scores["rollout"].append(rollout(one)[pos, :pos])
    scores["flow"].append(flow(one, rows=[pos])[pos, :pos])
  out = {"workdir": workdir, "variant": ",".join(model.cfg.layer_variants), "step": int(step), "inputs": b,
         "base_accuracy": float(np.mean(np.exp(base) > 0.5))}
  for ref_name, ref in (("ablation", ablation), ("grad", gxi)):
    for name, s in scores.items():
      rhos = [spearmanr(s[i], ref[i]).statistic for i in range(b)]
      out[f"{name}_vs_{ref_name}"] = float(np.nanmean(rhos))
  return out


def main(argv=None):
  rows = run_all(check_run, argv)
  print_table(rows, "base_accuracy", "p(target)>0.5")
  print(json.dumps(rows))


if __name__ == "__main__":
  main()
