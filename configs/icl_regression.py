"""In-context linear regression (Garg et al., 2022) with one attention layer (He et al., 2025).

Run (the default: d = 5, training prompts of N = 20 pairs, evaluated at 1..40 pairs; about a
minute on CPU):
  attnlab train --config configs/icl_regression.py --workdir runs/icl
Single-head softmax, multi-head softmax, linear attention:
  attnlab train --config configs/icl_regression.py:variant=mha,heads=1 --workdir runs/icl_mha1
  attnlab train --config configs/icl_regression.py:variant=mha,heads=4 --workdir runs/icl_mha4
  attnlab train --config configs/icl_regression.py:variant=linear,heads=1 --workdir runs/icl_lin1
Garg et al.'s sizes (d = 20, N = 40) or a smoke run (seconds):
  attnlab train --config configs/icl_regression.py:size=garg --workdir runs/icl_garg
  attnlab train --config configs/icl_regression.py:smoke=True --workdir /tmp/icl_smoke
Training on every length 1..N (Garg et al.) instead of N only (He et al.):
  attnlab train --config configs/icl_regression.py:lengths=all --workdir runs/icl_all
Single leaves: --config.task.dim=10 --config.task.train_examples=30 --config.train.steps=5000

The model is one attention-only layer (model.mlp="none"; layers=2 or mlp=gelu for a
1-layer Transformer) on the project's backbone, non-causal, no position embedding: the
query token (x_q, 0) attends to the (x_i, y_i) tokens. `mha` uses no RoPE
(positional="none": a prompt is a set). `linear` is the linear self-attention of the
in-context-learning analyses (von Oswald et al., 2023; Zhang, Frei & Bartlett, 2024; He et
al., 2025): identity feature map, no normaliser, so its output is a sum over the pairs.
"""

from attnlab import config_lib

ARGS = dict(variant="mha", heads=4, layers=1, mlp="none", d_model=64, lengths="fixed",
            size="default", smoke=False, seed=0)
# The variant leaves that make each variant the one of the in-context-learning papers.
VARIANT_ATTN = {"mha": {"positional": "none"},
                "linear": {"feature_map": "identity", "normalize": False}}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, ARGS)
  config_lib.check_choice(a, "size", ("default", "garg"))
  config_lib.check_choice(a, "lengths", ("fixed", "all"))
  c = config_lib.base_config()
  c.seed = a["seed"]
  c.task.name = "icl_regression"
  c.task.dim = 5
  c.task.train_examples = 20
  c.task.min_train_examples = 1  # lengths=all; lengths=fixed sets it to N below
  c.task.eval_multiplier = 2
  c.task.eval_step = 1
  m = c.model
  m.variant = a["variant"]
  m.num_layers, m.d_model, m.num_heads, m.mlp = a["layers"], a["d_model"], a["heads"], a["mlp"]
  m.causal = False
  m.position_embedding = "none"
  for k, v in VARIANT_ATTN.get(a["variant"], {}).items():
    m.attn[k] = v
  t = c.train
  t.steps = 3000
  t.batch_size = 64
  t.learning_rate = 1e-3
  t.warmup_steps = 100
  t.weight_decay = 0.0
  t.grad_clip = 1.0
  t.eval_every = 500
  t.eval_batches = 8  # per evaluated length (512 prompts: the error at one n to about +-0.015)
  t.checkpoint_every = 1000
  t.log_every = 100
  if a["size"] == "garg":
    c.task.dim, c.task.train_examples = 20, 40
    m.d_model = 256
    t.steps = 20000
    c.task.eval_step = 4
  if a["smoke"]:
    config_lib.apply_smoke(c)
    m.num_layers = a["layers"]
    m.num_heads = min(a["heads"], 2)
    c.task.dim, c.task.train_examples, c.task.eval_step = 3, 6, 3
  if a["lengths"] == "fixed":
    c.task.min_train_examples = c.task.train_examples
  config_lib.apply_variant_needs(c)
  return c
