"""Run offloaded parts on the accelerator while their weights stay in CPU RAM.

Two granularities, both for the duration of one `with` block:
- whole: every weight of the module is copied to the device when the block starts;
- per layer: each submodule that owns weights gets them on the device only for its own forward, so the
  device holds one layer's weights at a time. That is how an offloaded InternVL3 encodes a prompt in a
  few hundred MB of VRAM: its one forward pass visits every weight exactly once, so the bytes copied
  are the same as moving the whole model, and none of it has to fit at once.

When the block ends the device copies are dropped and every parameter points at its CPU tensor again:
nothing is copied back (the weights did not change) and the CPU tensors are never reallocated.

We do not use accelerate's offload hooks (`cpu_offload`) here: they replace each Parameter object with a
new one on every move, which unties tied weights (Qwen2's embeddings and lm_head) and breaks the identity
that whole-module moves and ComfyUI's memory accounting rely on. Swapping `Parameter.data` keeps the
same Parameter objects throughout.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch
from torch import nn


def _owned(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters(recurse=False))


def _inside(modules: Iterable[nn.Module]) -> set[int]:
    return {id(m) for root in modules for m in root.modules()}


def largest_layer_bytes(module: nn.Module, on_host: Iterable[nn.Module] = ()) -> int:
    """Device bytes a per-layer run of `module` needs for weights at any one time (its biggest layer)."""
    skip = _inside(on_host)
    return max((sum(p.numel() * p.element_size() for p in _owned(m)) for m in module.modules() if id(m) not in skip),
               default=0)


@contextlib.contextmanager
def weights_on(device: torch.device, *, whole: Iterable[nn.Module] = (), per_layer: Iterable[nn.Module] = (),
               on_host: Iterable[nn.Module] = ()):
    """Within the block, `whole` modules have all their weights on `device` and `per_layer` modules get
    each layer's weights there for the length of that layer's forward. Buffers (small: rotary
    frequencies and the like) of both are on `device` for the whole block.

    Between its forwards, a per-layer module's parameters hold empty placeholders, so code that reads a
    weight outside its own module's forward fails loudly instead of silently computing on the CPU.

    on_host: submodules of `per_layer` ones that stay where they are and compute there. For the token
    embedding table, the biggest "layer" of an LLM, a lookup of a few hundred rows on the CPU beats
    copying the whole table to the device.
    """
    on_host = list(on_host)
    host_modules = _inside(on_host)
    host_params = {p for m in on_host for p in m.parameters()}  # stay put, even where tied into a streamed layer
    home: dict[nn.Parameter, torch.Tensor] = {}
    buffers: list[tuple[nn.Module, str, torch.Tensor]] = []
    hooks = []

    def fetch(params):
        for p in params:
            p.data = home[p].to(device, non_blocking=True)

    def drop(params):
        for p in params:
            p.data = home[p].new_empty(0)

    try:
        for root, layered in [(m, False) for m in whole] + [(m, True) for m in per_layer]:
            for module in root.modules():
                if id(module) in host_modules:
                    continue
                for name, b in module.named_buffers(recurse=False):
                    buffers.append((module, name, b))
                    setattr(module, name, b.to(device))
                params = [p for p in _owned(module) if p not in host_params]
                new = [p for p in params if p not in home]
                for p in new:
                    home[p] = p.data
                if layered and params:  # a tied weight is fetched by every module that owns it
                    drop(new)
                    hooks.append(module.register_forward_pre_hook(lambda m, a, ps=params: fetch(ps)))
                    hooks.append(module.register_forward_hook(lambda m, a, o, ps=params: drop(ps)))
                elif new:
                    fetch(new)
        yield
    finally:
        for h in hooks:
            h.remove()
        for p, t in home.items():
            p.data = t
        for module, name, b in buffers:
            setattr(module, name, b)
