"""fp16 under ComfyUI: an overflow in OpenUni's own nodes is re-run in a wider dtype through ComfyUI's model
management (ComfyPlacement.cast), and one inside ComfyUI's KSampler stops with the precision fix instead of a black
image. The overflows are real: weights of the loaded tiny model scaled so that fp16 (max 65504) overflows on the CPU
while fp32 stays finite, as in tests/test_core_precision.py. Runs inside ComfyUI (COMFYUI_DIR, ComfyUI's Python);
skipped without it."""

from __future__ import annotations

import logging

import pytest
import torch

SANA_WEIGHT = "transformer_blocks.0.ff.conv_inverted.weight"  # ×1e3: its GLU product passes 65504 in fp16
# precision fp16 and attention "sdpa": a loader key no other test uses, so the scaled weights stay in this file.
FP16 = dict(precision="fp16", attention="sdpa")


@pytest.fixture
def scaled(comfy):
    """A fresh fp16 engine whose SANA overflows fp16 at its first step (its MODEL and VAE too)."""
    comfy.module("nodes.model_cache")._alive.clear()
    engine, model, vae = comfy.load(**FP16)
    assert engine.transformer.dtype == torch.float16 and vae.vae_dtype != torch.float16  # DC-AE never fp16
    with torch.inference_mode():  # the loader ran in inference mode, as ComfyUI runs nodes
        engine.transformer.get_parameter(SANA_WEIGHT).mul_(1e3)
    yield comfy, engine, model, vae
    comfy.module("nodes.model_cache")._alive.clear()
    import comfy.model_management as mm

    mm.unload_all_models()


def _latent(comfy):
    return comfy.call("OpenUniEmptyLatent", width=64, height=64, batch_size=1)[0]


def test_openuni_sampler_reruns_sana_in_fp32_through_comfyui(scaled, caplog):
    """Would catch ComfyPlacement without `dtype`/`cast` (the engine then raises instead of re-running), a cast that
    leaves ComfyUI's patcher with the fp16 size it measured, or a recovery that leaves SANA in fp16."""
    comfy, engine, model, _ = scaled
    parts = comfy.module("nodes.native.parts").parts_of(engine)
    size16 = parts.model.model_size()
    pos, neg = comfy.call("OpenUniTextEncode", model=engine, prompt="a red fox", negative_prompt="")
    args = dict(model=engine, positive=pos, negative=neg, seed=1, steps=2, cfg=1.0, sampler="euler", width=64,
                height=64, batch_size=1)
    with caplog.at_level(logging.INFO):
        latents = comfy.call("OpenUniSampler", **args)[0]["samples"]
    assert torch.isfinite(latents).all()
    assert [r.getMessage() for r in caplog.records if "inf/NaN" in r.getMessage()] == [
        "[OpenUni] SANA gave inf/NaN values at step 1 of 2 in fp16 (an overflow); running SANA in fp32 from now on."]
    assert engine.placement.dtype("sana") == engine.transformer.dtype == torch.float32
    fp32_bytes = sum(t.numel() * t.element_size() for t in parts.model.model.state_dict().values())
    assert parts.model.model_size() == fp32_bytes > 1.9 * size16  # ComfyUI plans with the fp32 size now
    # the next run stays in fp32 (no second log line) and gives the same latents
    with torch.inference_mode():
        again = comfy.call("OpenUniSampler", **args)[0]["samples"]
    torch.testing.assert_close(latents, again, atol=1e-5, rtol=0)


def test_ksampler_stops_an_fp16_overflow_with_the_precision_fix(scaled):
    """Would catch the MODEL's forward without its inf/NaN check: KSampler would return a NaN latent that the core VAE
    Decode turns into a black image, and the error (if any) would name the wrong node."""
    comfy, engine, model, _ = scaled
    OpenUniError = comfy.module("openuni_core.errors").OpenUniError
    pos, neg = comfy.call("OpenUniTextEncode", model=engine, prompt="a red fox", negative_prompt="")
    with pytest.raises(OpenUniError, match=r"^SANA gave inf/NaN values while sampling in fp16 \(an overflow\)\. Set the "
                                           r"loader's precision to bf16 .* or fp32 and run again\.$"):
        comfy.call("KSampler", model=model, seed=1, steps=2, cfg=1.0, sampler_name="euler", scheduler="normal",
                   positive=pos, negative=neg, latent_image=_latent(comfy), denoise=1.0)
