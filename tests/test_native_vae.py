"""The loader's VAE output (DC-AE as comfy.sd.VAE) in ComfyUI's core VAE nodes, against diffusers' AutoencoderDC called
directly on the same weights. Runs inside ComfyUI (COMFYUI_DIR, ComfyUI's Python); skipped without it."""

from __future__ import annotations

import copy

import pytest
import torch


@pytest.fixture(scope="module")
def loaded(comfy):
    engine, _, vae = comfy.load()
    return comfy, engine, vae


def diffusers_decode(dcae, latents):
    """AutoencoderDC.decode on [B,32,h,w] → IMAGE [B,H,W,3] in 0..1, ComfyUI's pixel convention."""
    with torch.no_grad():
        return ((dcae.decode(latents, return_dict=False)[0] + 1) / 2).clamp(0, 1).movedim(1, -1)


def diffusers_encode(dcae, images):
    with torch.no_grad():
        return dcae.encode(images.movedim(-1, 1) * 2 - 1, return_dict=False)[0]


def test_core_vae_nodes_match_diffusers(loaded):
    """VAE Decode / Encode equal AutoencoderDC on the LATENT as it is (no scaling: the convention), the Tiled nodes
    equal the untiled result (exact tiling; ComfyUI's own blended tiles would leave seams), VAE Encode crops to the
    32-pixel grid, VAE Encode (for Inpainting) gives a latent with its noise mask."""
    comfy, engine, vae = loaded
    latents = torch.randn(2, 32, 8, 8, generator=torch.Generator().manual_seed(0))
    decoded = comfy.call("VAEDecode", vae=vae, samples={"samples": latents})[0]
    torch.testing.assert_close(decoded, diffusers_decode(engine.vae, latents), atol=1e-5, rtol=0)
    tiled = comfy.call("VAEDecodeTiled", vae=vae, samples={"samples": latents}, tile_size=128, overlap=32,
                       temporal_size=64, temporal_overlap=8)[0]
    torch.testing.assert_close(tiled, decoded, atol=1e-4, rtol=0)

    images = torch.rand(2, 256, 256, 3, generator=torch.Generator().manual_seed(1))
    encoded = comfy.call("VAEEncode", vae=vae, pixels=images)[0]["samples"]
    torch.testing.assert_close(encoded, diffusers_encode(engine.vae, images), atol=1e-5, rtol=0)
    tiled = comfy.call("VAEEncodeTiled", vae=vae, pixels=images, tile_size=128, overlap=32, temporal_size=64,
                       temporal_overlap=8)[0]["samples"]
    torch.testing.assert_close(tiled, encoded, atol=1e-4, rtol=0)
    assert comfy.call("VAEEncode", vae=vae, pixels=torch.rand(1, 270, 300, 3))[0]["samples"].shape == (1, 32, 8, 9)

    mask = torch.zeros(1, 256, 256)
    mask[:, 64:192, 64:192] = 1
    inpaint = comfy.call("VAEEncodeForInpaint", vae=vae, pixels=images[:1], mask=mask, grow_mask_by=6)[0]
    assert inpaint["samples"].shape == (1, 32, 8, 8) and inpaint["noise_mask"].shape[-2:] == (256, 256)


def test_openuni_and_core_vae_nodes_agree(loaded):
    """One LATENT convention: OpenUni VAE Encode → core VAE Decode, and core VAE Encode → OpenUni VAE Decode, give the
    same images as each node pair alone (a scaled/unscaled mix-up would be off by the 0.41 scaling factor)."""
    comfy, engine, vae = loaded
    images = torch.rand(1, 128, 128, 3, generator=torch.Generator().manual_seed(2))
    ours = comfy.call("OpenUniVAEEncode", model=engine, image=images, tiling="off")[0]
    core = comfy.call("VAEEncode", vae=vae, pixels=images)[0]
    torch.testing.assert_close(ours["samples"], core["samples"], atol=1e-5, rtol=0)
    torch.testing.assert_close(comfy.call("VAEDecode", vae=vae, samples=ours)[0],
                               comfy.call("OpenUniVAEDecode", model=engine, latent=core, tiling="off")[0],
                               atol=1e-5, rtol=0)


def test_large_images_are_tiled_exactly_inside_vae_decode(loaded, monkeypatch):
    """Above the engine's tiling threshold VAE Decode tiles with the exact tiling: the same image as untiled."""
    comfy, _, vae = loaded
    native_vae = comfy.module("nodes.native.vae")
    latents = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(3))
    plain = comfy.call("VAEDecode", vae=vae, samples={"samples": latents})[0]
    monkeypatch.setattr(native_vae, "want_tiling", lambda h, w, tiled: True)
    monkeypatch.setattr(native_vae, "TILE_SIZE", 64)
    torch.testing.assert_close(comfy.call("VAEDecode", vae=vae, samples={"samples": latents})[0], plain,
                               atol=1e-4, rtol=0)


def test_memory_estimates_let_comfyui_plan(loaded):
    """Estimates grow with the image, tiled sizes need less than untiled would, and they follow the dtype's size."""
    _, _, vae = loaded
    decode = [vae.memory_used_decode((1, 32, s // 32, s // 32), torch.bfloat16) for s in (512, 1024, 2048, 4096)]
    assert decode == sorted(decode) and decode[0] > 100 << 20
    assert decode[3] < 16 * decode[1]  # 4096² is tiled: far below 16× the 1024² estimate
    assert vae.memory_used_decode((1, 32, 16, 16), torch.float32) == 2 * decode[0]
    assert vae.memory_used_encode((1, 3, 512, 512), torch.bfloat16) == decode[0]


def test_dcae_never_runs_in_fp16(comfy):
    """A DC-AE handed over in fp16 runs in bf16 where the device has it, else fp32 (its activations overflow fp16)."""
    import comfy.model_management as mm

    native_vae = comfy.module("nodes.native.vae")
    engine = comfy.load()[0]
    dcae = copy.deepcopy(engine.vae).to(torch.float16)
    vae = native_vae.OpenUniVAE(dcae)
    assert vae.vae_dtype == (torch.bfloat16 if mm.should_use_bf16(vae.device) else torch.float32)
    assert dcae.dtype == vae.vae_dtype
