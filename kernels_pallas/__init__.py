"""Pallas kernels (GPU and TPU) for attnlab's sparse and linear paths.

Each kernel sits beside a custom_vjp wrapper and is tested against its reference in
interpret mode. This package depends on jax only (attnlab's masks are translated in
`attnlab/attention/ops/softmax/pallas.py`, which registers impl="pallas"; the linear
kernel's op wrappers are in `attnlab/attention/ops/linear/pallas.py`).

  block_sparse_flash.py      block-sparse flash attention: host-built block lists, the
                             Triton (GPU) forward / dq / dk-dv kernels, the custom_vjp
  block_sparse_flash_tpu.py  the same kernels for TPU (Mosaic, scalar-prefetch grid)
  chunked_linear.py          causal linear attention with scalar / diagonal (GLA) decay,
                             chunk-parallel, initial and final state, the custom_vjp
  chunked_linear_kernels.py  its Triton (GPU) kernels: states, output, state gradients, grads
  chunked_linear_tpu.py      its TPU (Mosaic) form: the sequential passes on the grid
  neighborhood.py            neighborhood attention (NATTEN) from its key table through the
                             block-sparse kernel (`KeyTableMask` -> block metadata)
  runtime.py                 backend checks and the interpret-mode switch
                             (ATTNLAB_PALLAS_INTERPRET=1, `runtime.interpret_mode()`)
"""
