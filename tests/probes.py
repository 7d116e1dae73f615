"""Instruments tests install on a loaded model (the engine carries no counters of its own)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def counting_llm_forwards(model):
    """Counts forwards of the model's LLM body (InternVL3's language model) inside the block: `with ... as n: ...;
    n[0]` is the count so far."""
    count = [0]
    handle = model.mllm.model.language_model.register_forward_hook(lambda *a: count.__setitem__(0, count[0] + 1))
    try:
        yield count
    finally:
        handle.remove()
