"""Placement: the bytes of weights each memory policy puts on the accelerator at its worst moment (section
`placement`), while generating and while captioning.

Computed from the loaded model's parameters, nothing is moved, so it runs anywhere (on CUDA the `cuda` section
measures the real peaks). It mirrors Placement.use (openuni_core/placement.py): offloaded parts are copied in only while used, and the
MLLM encodes layer by layer (openuni_core/streaming.py) but captions whole. tests/test_benchmarks.py checks
these figures against what the core actually asks the device for.
"""

from __future__ import annotations

from .common import Report, gb


def bench_placement(model, name: str, report: Report) -> dict:
    """{policy: {"generate": bytes, "caption": bytes}} for the loaded model, as the module docstring says."""
    from openuni_core.placement import param_bytes as _param_bytes
    from openuni_core.streaming import largest_layer_bytes

    mllm, bridge = _param_bytes(model.mllm), _param_bytes(model.bridge)
    sana, vae = _param_bytes(model.transformer), _param_bytes(model.vae)
    layer = largest_layer_bytes(model.mllm, model.embedding_tables())
    encode = bridge + layer
    res = {
        "none": {"generate": mllm + bridge + sana + vae, "caption": mllm + bridge + sana + vae},
        "mllm": {"generate": sana + vae + encode, "caption": sana + vae + mllm + bridge},
        "sequential": {"generate": max(encode, sana, vae), "caption": mllm + bridge},
    }
    report.say(f"[{name}] weights: MLLM {gb(mllm)}, connector {gb(bridge)}, SANA {gb(sana)}, DC-AE {gb(vae)}; "
               f"largest streamed MLLM layer {gb(layer)}")
    for policy, r in res.items():
        report.say(f"[{name}] weights on the device at most, policy {policy:10s}: generating {gb(r['generate'])}, "
                   f"captioning {gb(r['caption'])} (computed; activations and the CUDA context come on top)")
    return res
