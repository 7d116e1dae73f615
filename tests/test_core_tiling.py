"""Tiled DC-AE decode/encode at sizes where tiling really happens (several tiles per side), against diffusers'
own untiled AutoencoderDC on the same folder, with fixed tolerances.

The tolerances are fixed numbers, not derived from our own results: float32 rounding differences measured
here are ≤ 1e-6 on decoded pixels (0..1) and ≤ 1e-5 on latents (|values| up to ~15); a tiling fault (a halo
shorter than the receptive field, a tile put in the wrong place, a scaling factor applied) is ≥ 1e-2.
"""

import pytest
import torch

from openuni_core import vae as vae_ops
from openuni_core import vae_tiling
from openuni_core.errors import OpenUniError
from references import reference_decode, reference_encode

PIXEL_TOL = 1e-5  # decoded images, 0..1
LATENT_TOL = 1e-4  # latents


@pytest.fixture(scope="module")
def vae32(model):
    return model.vae


@pytest.fixture(scope="module")
def latents():
    return torch.randn(1, 32, 12, 10, generator=torch.Generator().manual_seed(3))  # 384×320 pixels


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(4)
    small = torch.rand(1, 3, 12, 10, generator=g)
    smooth = torch.nn.functional.interpolate(small, size=(384, 320), mode="bilinear")
    return (smooth + 0.05 * torch.rand(smooth.shape, generator=g)).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def _counting(monkeypatch, name):
    """Count calls of vae.py's tiled path `name` (decode_tiled / encode_tiled), so a test knows tiling happened."""
    calls, real = [], getattr(vae_ops, name)
    monkeypatch.setattr(vae_ops, name, lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("tile", [64, 96, 160])
def test_tiled_decode_equals_diffusers_untiled(vae32, reference_vae, latents, tile, monkeypatch):
    """384×320 pixels in tiles of `tile` (3–6 per side). Guards against a halo shorter than the receptive field
    (e.g. `halo=math.ceil(radius) + 1` → `halo=1` in vae_tiling._decode_split), a tile cropped or placed one
    cell off, or a scaling factor applied on the decode side."""
    calls = _counting(monkeypatch, "decode_tiled")
    tiled = vae_ops.decode(vae32, latents, tiled=True, tile_size=tile)
    assert calls, "the tiled path was not taken"
    ref = reference_decode(reference_vae, latents)
    assert tiled.shape == ref.shape == (1, 384, 320, 3)
    assert (tiled - ref).abs().max().item() <= PIXEL_TOL


@pytest.mark.parametrize("tile", [64, 96, 160])
def test_tiled_encode_equals_diffusers_untiled(vae32, reference_vae, image, tile, monkeypatch):
    """The mirror image for encode. Guards against a halo shorter than the receptive field in
    vae_tiling._encode_split, a dropped out_shortcut term, or a scaling factor applied to the latents."""
    calls = _counting(monkeypatch, "encode_tiled")
    tiled = vae_ops.encode(vae32, image, tiled=True, tile_size=tile)
    assert calls, "the tiled path was not taken"
    ref = reference_encode(reference_vae, image)
    assert tiled.shape == ref.shape == (1, 32, 12, 10)
    assert (tiled - ref).abs().max().item() <= LATENT_TOL


def test_exact_tiling_runs_the_convolutional_stages_tile_by_tile(vae32, latents, image, monkeypatch):
    """The exact path is really taken (not the blended fallback) and it calls the tail once per tile."""
    tail_calls = []
    first_local = list(reversed(vae32.decoder.up_blocks))[-1]  # the highest-resolution stage
    handle = first_local.register_forward_pre_hook(lambda m, a: tail_calls.append(a[0].shape[-2:]))
    monkeypatch.setattr(vae_tiling, "_decode_blended", lambda *a: pytest.fail("fell back to blended tiles"))
    monkeypatch.setattr(vae_tiling, "_encode_blended", lambda *a: pytest.fail("fell back to blended tiles"))
    try:
        vae_ops.decode(vae32, latents, tiled=True, tile_size=128)
    finally:
        handle.remove()
    assert len(tail_calls) == 3 * 3  # 384/128 × ceil(320/128)
    assert max(s[0] for s in tail_calls) < 384 // 2  # each tile is a fraction of the image
    vae_ops.encode(vae32, image, tiled=True, tile_size=128)


def test_blended_fallback_has_no_steps(vae32, latents, monkeypatch):
    """For a DC-AE of unknown structure we blend overlapping whole-model tiles: approximate, but seamless."""
    monkeypatch.setattr(vae_tiling, "_decode_split", lambda *a: None)
    untiled = vae_ops.decode(vae32, latents, tiled=False)[0]
    tiled = vae_ops.decode(vae32, latents, tiled=True, tile_size=192, tile_overlap=64)[0]
    assert tiled.shape == untiled.shape and torch.isfinite(tiled).all()

    def column_steps(x):  # mean |Δ| between neighbouring columns, per column
        return (x[:, 1:] - x[:, :-1]).abs().mean(dim=(0, 2))

    steps_t, steps_u = column_steps(tiled), column_steps(untiled)
    # No column of the blended image jumps more than the roughest column of the untiled one.
    assert steps_t.max() <= steps_u.max() * 1.05
    assert (tiled - untiled).abs().mean() < 0.2


def test_image_that_fits_one_tile_takes_the_untiled_path(vae32, reference_vae, monkeypatch):
    """tiled=True on an image no larger than one tile decodes it whole (no tile machinery), equal to diffusers.
    Guards against `_tiling_plan` dropping its fits-in-one-tile condition."""
    calls = _counting(monkeypatch, "decode_tiled")
    lat = torch.randn(1, 32, 4, 6)
    out = vae_ops.decode(vae32, lat, True, tile_size=256)  # positional `tiled`, as before
    assert not calls
    assert (out - reference_decode(reference_vae, lat)).abs().max().item() <= PIXEL_TOL


def test_auto_tiling_above_the_threshold(vae32, monkeypatch):
    seen = []
    real = vae_ops.decode_tiled
    monkeypatch.setattr(vae_ops, "decode_tiled", lambda *a: seen.append(1) or real(*a))
    vae_ops.decode(vae32, torch.randn(1, 32, 4, 4))  # 128² px: not tiled
    assert not seen
    monkeypatch.setattr(vae_ops, "TILE_THRESHOLD", 96 * 96)
    vae_ops.decode(vae32, torch.randn(1, 32, 4, 4), tile_size=64)
    assert seen


def test_model_decode_and_encode_pass_tiling_through(model, reference_vae, latents, image, monkeypatch):
    """OpenUniModel.decode/encode_images hand `tiled` to the VAE code (with a tile size small enough for this image
    to need tiles). Guards against the facade dropping its `tiled` argument."""
    monkeypatch.setattr(vae_ops, "TILE_SIZE", 128)
    decodes, encodes = _counting(monkeypatch, "decode_tiled"), _counting(monkeypatch, "encode_tiled")
    assert (model.decode(latents, tiled=True) - reference_decode(reference_vae, latents)).abs().max() <= PIXEL_TOL
    assert (model.encode_images(image, tiled=True) - reference_encode(reference_vae, image)).abs().max() <= LATENT_TOL
    assert decodes and encodes
    model.decode(latents, tiled=False)
    model.encode_images(image, tiled=False)
    assert len(decodes) == len(encodes) == 1


@pytest.mark.parametrize("size,overlap", [(48, None), (100, None), (0, None), (256, 160), (256, 16), (256, -32)])
def test_bad_tile_geometry_is_refused(vae32, size, overlap):
    with pytest.raises(OpenUniError):
        vae_ops.decode(vae32, torch.randn(1, 32, 2, 2), tiled=True, tile_size=size, tile_overlap=overlap)


@pytest.mark.parametrize("size", [1, 5, 24, 25, 40, 45, 64, 129])
@pytest.mark.parametrize("tile,overlap", [(8, 2), (24, 4), (16, 0)])
def test_tile_starts_cover_with_overlap(size, tile, overlap):
    starts = vae_tiling.tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts == sorted(starts)
    assert min(size, starts[-1] + tile) == size  # the last tile reaches the end
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= overlap  # neighbours share at least `overlap`
