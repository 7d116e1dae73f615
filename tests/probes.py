"""Instruments tests install on a loaded model (the engine carries no counters of its own)."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def counting_forwards(module):
    """Counts forwards of `module` inside the block: `with ... as n: ...; n[0]` is the count so far."""
    count = [0]
    handle = module.register_forward_hook(lambda *a: count.__setitem__(0, count[0] + 1))
    try:
        yield count
    finally:
        handle.remove()


def counting_llm_forwards(model):
    """Counts forwards of the model's LLM body (InternVL3's language model)."""
    return counting_forwards(model.mllm.model.language_model)


def counting_vision_forwards(model):
    """Counts forwards of InternVL3's vision tower (InternViT)."""
    return counting_forwards(model.mllm.model.vision_tower)


@torch.no_grad()
def make_talkative(mllm, seed: int = 1) -> None:
    """The tiny test LLM answers every prompt with one repeated newline token (its weights are near zero); redrawn at
    unit gain, with a stronger image projection, its answers depend on the image and the question, so tests that
    compare answers compare real, varied text."""
    g = torch.Generator().manual_seed(seed)
    for name, p in mllm.model.language_model.named_parameters():
        if p.ndim == 2 and "embed" not in name:
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    mllm.lm_head.weight.copy_(torch.randn(mllm.lm_head.weight.shape, generator=g) * 0.5)
    mllm.model.multi_modal_projector.linear_2.weight.mul_(20)
