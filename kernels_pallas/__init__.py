"""Pallas kernels (GPU and TPU) for attnlab's sparse and linear paths.

Each kernel sits beside a custom_vjp wrapper and is tested against its reference in
interpret mode. This package depends on jax only.
"""
