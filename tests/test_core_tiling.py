"""Tiled DC-AE decode/encode: equal to the untiled result up to float noise, no seams, bounded memory.

"Numeric noise" here is measured, not assumed: the untiled fp32 result's own distance from an fp64 run
of the same model. Tiling may differ from the untiled fp32 result by no more than twice that (both are
fp32 approximations of the same exact value).
"""

import copy

import pytest
import torch

from openuni_core import vae as vae_ops
from openuni_core import vae_tiling
from openuni_core.errors import OpenUniError


@pytest.fixture(scope="module")
def vae32(model):
    return model.vae


@pytest.fixture(scope="module")
def vae64(model):
    return copy.deepcopy(model.vae).double()


def _decode64(vae64, latents):
    with torch.no_grad():
        x = vae64.decode(latents.double(), return_dict=False)[0]
    return ((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)


def _encode64(vae64, images):
    with torch.no_grad():
        lat = vae64.encode(images.double().permute(0, 3, 1, 2) * 2 - 1, return_dict=False)[0]
    return lat.latent if hasattr(lat, "latent") else lat


@pytest.fixture(scope="module")
def latents():
    return torch.randn(1, 32, 12, 10, generator=torch.Generator().manual_seed(3))  # 384×320 pixels


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(4)
    small = torch.rand(1, 3, 12, 10, generator=g)
    smooth = torch.nn.functional.interpolate(small, size=(384, 320), mode="bilinear")
    return (smooth + 0.05 * torch.rand(smooth.shape, generator=g)).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


@pytest.mark.parametrize("tile", [64, 96, 160])
def test_tiled_decode_equals_untiled_within_float_noise(vae32, vae64, latents, tile):
    untiled = vae_ops.decode(vae32, latents, tiled=False)
    tiled = vae_ops.decode(vae32, latents, tiled=True, tile_size=tile)
    noise = (untiled.double() - _decode64(vae64, latents)).abs().max().item()
    assert tiled.shape == untiled.shape == (1, 384, 320, 3)
    assert (tiled - untiled).abs().max().item() <= 2 * noise + 1e-7


@pytest.mark.parametrize("tile", [64, 96, 160])
def test_tiled_encode_equals_untiled_within_float_noise(vae32, vae64, image, tile):
    untiled = vae_ops.encode(vae32, image, tiled=False)
    tiled = vae_ops.encode(vae32, image, tiled=True, tile_size=tile)
    noise = (untiled.double() - _encode64(vae64, image)).abs().max().item()
    assert tiled.shape == untiled.shape == (1, 32, 12, 10)
    assert (tiled - untiled).abs().max().item() <= 2 * noise + 1e-7


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


def test_seams_no_larger_than_numeric_noise(vae32, vae64, latents):
    """Across every tile border, neighbouring pixels differ exactly as much as they do untiled."""
    tile = 128
    untiled = vae_ops.decode(vae32, latents, tiled=False)[0]
    tiled = vae_ops.decode(vae32, latents, tiled=True, tile_size=tile)[0]
    noise = (untiled.double() - _decode64(vae64, latents)[0]).abs().max().item()
    for axis, n in ((0, 384), (1, 320)):
        for border in range(tile, n, tile):
            step_t = tiled.select(axis, border) - tiled.select(axis, border - 1)
            step_u = untiled.select(axis, border) - untiled.select(axis, border - 1)
            assert (step_t - step_u).abs().max().item() <= 4 * noise + 1e-7, (axis, border)


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


def test_image_that_fits_one_tile_is_decoded_untiled(vae32):
    lat = torch.randn(1, 32, 4, 6)
    a = vae_ops.decode(vae32, lat, tiled=False)
    assert torch.equal(vae_ops.decode(vae32, lat, True), a)  # positional `tiled`, as before
    assert torch.equal(vae_ops.decode(vae32, lat, tiled=True, tile_size=256), a)


def test_auto_tiling_above_the_threshold(vae32, monkeypatch):
    seen = []
    real = vae_ops.decode_tiled
    monkeypatch.setattr(vae_ops, "decode_tiled", lambda *a: seen.append(1) or real(*a))
    vae_ops.decode(vae32, torch.randn(1, 32, 4, 4))  # 128² px: not tiled
    assert not seen
    monkeypatch.setattr(vae_ops, "TILE_THRESHOLD", 96 * 96)
    vae_ops.decode(vae32, torch.randn(1, 32, 4, 4), tile_size=64)
    assert seen


def test_model_decode_and_encode_pass_tiling_through(model, latents):
    assert torch.equal(model.decode(latents, tiled=True), vae_ops.decode(model.vae, latents, tiled=True))
    img = model.decode(latents[..., :4, :4])
    assert model.encode_images(img, tiled=True).shape == (1, 32, 4, 4)


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
