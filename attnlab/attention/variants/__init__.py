"""Attention variants, one file per family; importing this package registers them all."""

from attnlab.attention.variants import (  # noqa: F401  (each import registers its variants)
    biformer,
    channel,
    decay,
    gated,
    halo,
    heads,
    hilo,
    inline,
    linear,
    lowrank,
    maxvit,
    mega,
    neighborhood,
    routed,
    softmax,
    softmax_like,
    sparse_patterns,
    sparse_static,
    swin,
    twins,
)
