"""The logical axis names the models use and their default mapping onto mesh axes.

Modules name array axes logically ("batch", "embed", "heads", ...) with
`nn.with_logical_partitioning` / `nn.with_logical_constraint`; the trainer maps them
onto the mesh (data, fsdp, tensor) with these rules unless `config.mesh.rules` replaces
them. Data parallel over (data, fsdp); parameters sharded over fsdp along "embed" and
over tensor along the head / hidden / vocabulary / class axes (Megatron style).
"""

from __future__ import annotations

from typing import Any

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("classes", None),
    ("layers", None),
)
