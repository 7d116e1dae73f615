"""Live previews: the latent→RGB map fitted from the loaded DC-AE, cached per DC-AE in ComfyUI's user folder, and the
preview images ComfyUI's progress bar receives while KSampler and OpenUni Sampler run. Runs inside ComfyUI
(COMFYUI_DIR, ComfyUI's Python); skipped without it."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def previews():
    """Latent2RGB previews on, and every progress-bar update (value, total, preview) recorded."""
    import comfy.utils
    import latent_preview
    from comfy.cli_args import LatentPreviewMethod

    before = latent_preview.args.preview_method
    latent_preview.args.preview_method = LatentPreviewMethod.Latent2RGB
    seen = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total,
                                                                                                      preview)))
    yield seen
    comfy.utils.set_progress_bar_global_hook(None)
    latent_preview.args.preview_method = before


def flat_colour_latents(dcae, scaling, seed):
    """Images of flat 32×32 colour blocks → (scaled latents [N,32,h,w] of the interior cells, their colours [N,3])."""
    colours = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    pixels = colours.repeat_interleave(32, 2).repeat_interleave(32, 3)
    with torch.no_grad():
        z = dcae.encode(pixels, return_dict=False)[0] * scaling
    return (z[:, :, 1:-1, 1:-1].permute(0, 2, 3, 1).reshape(-1, 32),
            colours[:, :, 1:-1, 1:-1].permute(0, 2, 3, 1).reshape(-1, 3))


def test_preview_map_is_fitted_from_the_dcae_and_cached(comfy, monkeypatch):
    """The map predicts the colours of flat colour blocks it was not fitted on from their DC-AE latents (R² well
    above 0 even for the tiny random DC-AE); it is cached under the user folder, keyed by the DC-AE's weights, and a
    second MODEL over the same DC-AE reads it instead of fitting again."""
    engine, model, _ = comfy.load()
    fmt = model.get_model_object("latent_format")
    factors, bias = fmt.latent_rgb_factors, fmt.latent_rgb_factors_bias
    assert len(factors) == 32 and all(len(row) == 3 for row in factors) and len(bias) == 3
    scaling = float(engine.vae.config.scaling_factor)
    x, colours = flat_colour_latents(engine.vae, scaling, seed=99)
    predicted = x @ torch.tensor(factors) + torch.tensor(bias)
    r2 = 1 - ((predicted - colours) ** 2).sum() / ((colours - colours.mean(0)) ** 2).sum()
    print(f"\npreview map on unseen colour blocks: R² {r2:.2f}")
    assert r2 > 0.5
    cached = list((comfy.base / "user" / "openuni").glob("latent_rgb_*.json"))
    assert len(cached) == 1
    preview = comfy.module("nodes.native.preview")
    monkeypatch.setattr(preview, "fit_latent_rgb", lambda *a, **k: pytest.fail("fitted again"))
    again = comfy.module("nodes.native.diffusion").OpenUniLatentFormat(
        scaling, rgb_source=lambda: preview.latent_rgb(engine.vae, scaling))
    assert again.latent_rgb_factors == factors


@pytest.mark.parametrize("node", ["KSampler", "OpenUniSampler"])
def test_previews_arrive_while_sampling(comfy, previews, node):
    """One progress update per step, each with a preview image of the latent's size (one pixel per latent cell:
    8×4 for 256×128); the server scales it for the UI."""
    engine, model, _ = comfy.load()
    pos, neg = comfy.call("OpenUniTextEncode", model=engine, prompt="a fox", negative_prompt="")
    args = dict(seed=1, steps=3, cfg=4.5, positive=pos, negative=neg)
    if node == "KSampler":
        latent = comfy.call("OpenUniEmptyLatent", width=256, height=128, batch_size=1)[0]
        comfy.call("KSampler", model=model, sampler_name="euler", scheduler="normal", latent_image=latent,
                   denoise=1.0, **args)
    else:
        comfy.call("OpenUniSampler", model=engine, sampler="dpmpp", width=256, height=128, batch_size=1, **args)
    steps = [(value, total) for value, total, _ in previews]
    assert steps == [(1, 3), (2, 3), (3, 3)]
    for _, _, (fmt, image, max_size) in previews:
        assert fmt == "JPEG" and image.size == (8, 4) and max_size > 0
