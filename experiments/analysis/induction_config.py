"""The induction-heads task (Olsson et al., 2022) for `attnlab analyze`'s induction check.

A small attention-only model (2 layers, no MLP) learns the task on a CPU in about a
minute; `attnlab analyze` then finds its induction head by the prefix-matching score
(experiments/analysis/README.md has the commands and the output).
  attnlab train --config experiments/analysis/induction_config.py --workdir runs/induction
  attnlab analyze --workdir runs/induction --inputs 16
  attnlab train --config experiments/analysis/induction_config.py:smoke=True --workdir /tmp/ind
"""

from attnlab import config_lib

ARGS = dict(variant="mha", smoke=False)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, ARGS)
  c = config_lib.base_config()
  c.task.name = "induction"
  c.task.vocab_size = 16
  c.task.seq_len = 32
  c.model.variant = a["variant"]
  c.model.num_layers = 2
  c.model.d_model = 64
  c.model.num_heads = 4
  c.model.mlp = "none"
  c.train.steps = 600
  c.train.batch_size = 32
  c.train.learning_rate = 3e-3
  c.train.warmup_steps = 50
  c.train.weight_decay = 0.0
  c.train.eval_every = 200
  c.train.eval_batches = 2
  c.train.checkpoint_every = 200
  c.train.log_every = 50
  if a["smoke"]:
    config_lib.apply_smoke(c)
    c.task.seq_len = 16
    c.model.mlp = "none"
  config_lib.apply_variant_needs(c)
  return c
