"""Does the prefix-matching score single out the induction head of a trained run?

  python experiments/analysis/induction_check.py RUN [--inputs 64]

RUN is a workdir trained with experiments/analysis/induction_config.py. Prints, per
(layer, head), the prefix-matching score (`attnlab.analysis.patterns`) on
  (a) the task's eval inputs, at the query the task scores (the second TRIGGER, whose
      answer is the token after the first TRIGGER: the induction target), and
  (b) repeated random sequences [r, r] (Olsson et al., 2022's probe), second half,
then the top head's score against the runner-up's. Also the previous-token score, which
should single out the layer-0 head the induction head composes with.
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

from attnlab.analysis import capture as C
from attnlab.analysis import patterns
from attnlab.analysis.analyze_cli import _first_examples, load_run_config, restore_variables
from attnlab.train.checkpoint import Checkpointer
from attnlab.train.trainer import setup


def repeated_random(n_seq: int, seq_len: int, vocab: int, seed: int = 0) -> np.ndarray:
  """int [n_seq, seq_len]: a random half over data tokens [2, vocab) repeated twice."""
  rng = np.random.default_rng(seed)
  half = rng.integers(2, vocab, size=(n_seq, seq_len // 2))
  return np.concatenate([half, half], axis=1).astype(np.int32)


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("workdir")
  p.add_argument("--inputs", type=int, default=64)
  args = p.parse_args(argv)
  config = load_run_config(args.workdir)
  run = setup(config)
  ckpt = Checkpointer(args.workdir, keep=None)
  step = ckpt.latest_step()
  ckpt.close()
  variables = restore_variables(run, args.workdir, step)
  batch = _first_examples(run.eval_batches, args.inputs)
  cap = jax.jit(lambda v, x: C.capture(run.model, v, x))
  t = batch["inputs"].shape[1]

  # (a) eval inputs, the scored (last) query row only
  w_task = [np.asarray(w) for w in jax.device_get(cap(variables, batch["inputs"])["weights"])]
  task_scores = patterns.last_query_scores(w_task, batch["inputs"])
  # (b) repeated random sequences, all rows with a match (the second half)
  rep = repeated_random(args.inputs, t, int(config.task.vocab_size))
  w_rep = [np.asarray(w) for w in jax.device_get(cap(variables, rep)["weights"])]
  rep_scores = patterns.scores(w_rep, rep)

  out = {"step": int(step), "task_prefix_matching": task_scores.tolist(),
         "repeated_prefix_matching": rep_scores["prefix_matching"].tolist(),
         "repeated_previous_token": rep_scores["previous_token"].tolist()}
  print(f"run {args.workdir} step {step}, {args.inputs} inputs, length {t}")
  for name, s in (("prefix-matching, task inputs, scored query", task_scores),
                  ("prefix-matching, repeated random sequences", rep_scores["prefix_matching"]),
                  ("previous-token, repeated random sequences", rep_scores["previous_token"])):
    flat = np.sort(s.ravel())[::-1]
    top = np.unravel_index(np.argmax(s), s.shape)
    print(f"\n{name}:")
    for layer in range(s.shape[0]):
      print(f"  layer {layer}: " + "  ".join(f"h{h}={s[layer, h]:.3f}" for h in range(s.shape[1])))
    print(f"  top head L{top[0]}h{top[1]} = {flat[0]:.3f}; runner-up {flat[1]:.3f}; median {np.median(flat):.3f}")
    out[name] = {"top": [int(top[0]), int(top[1])], "top_score": float(flat[0]), "runner_up": float(flat[1])}
  print("\n" + json.dumps(out))


if __name__ == "__main__":
  main()
