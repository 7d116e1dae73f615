"""Partial ("lowvram") loading of the OpenUni parts by ComfyUI's ModelPatcher: layers left in RAM compute on the load
device (cast on forward), direct parameters of non-leaf modules and their patches are handled on load, and the
results equal a full load. Runs inside ComfyUI (COMFYUI_DIR, ComfyUI's Python); skipped without it.

On a CPU-only machine the load device and RAM are the same device, so the numerics are checked on the CPU, and
the "meta" device stands in for a GPU where only placement matters (anything left behind on the CPU then fails
with a device mismatch, as a CUDA/CPU mix would)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def loaded(comfy):
    import comfy.model_management as mm

    engine, model, _ = comfy.load()
    pos = comfy.call("OpenUniTextEncode", model=engine, prompt="a fox", negative_prompt="")[0][0][0]
    mm.unload_all_models()  # the patchers below are loaded by hand
    yield comfy, engine, model, pos
    mm.unload_all_models()


def random_lora_patches(comfy, model, seed=0) -> dict:
    """LoRA patches (comfy.lora.load_lora) on every matrix weight of SANA, as a diffusers-named file would give."""
    import comfy.lora as lora_module

    key_map = comfy.module("nodes.native.lora").key_map(model.model)
    gen = torch.Generator().manual_seed(seed)
    lora = {}
    for k, v in model.model.diffusion_model.state_dict().items():
        if k.endswith(".weight") and v.ndim in (2, 4) and v.shape[0] >= 4:
            name = "transformer." + k[: -len(".weight")]
            lora[f"{name}.lora_A.weight"] = torch.randn(4, *v.shape[1:], generator=gen) * 0.05
            lora[f"{name}.lora_B.weight"] = torch.randn(v.shape[0], 4, *([1] * (v.ndim - 2)), generator=gen) * 0.05
    return lora_module.load_lora(lora, key_map, log_missing=False)


def test_partial_load_equals_full_load_with_a_lora(loaded):
    """A LoRA MODEL loaded with a quarter of its size as budget (the rest cast per call, LoRA applied on the fly)
    denoises exactly as fully loaded; detaching restores the base weights."""
    comfy, _, model, pos = loaded
    x, sigma = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0.5])
    lora = model.clone()
    lora.add_patches(random_lora_patches(comfy, model), 1.0)
    cpu = torch.device("cpu")
    with torch.no_grad():
        base = model.model.apply_model(x, sigma, c_crossattn=pos)
        lora.patch_model(cpu, lowvram_model_memory=0)
        full = lora.model.apply_model(x, sigma, c_crossattn=pos)
        lora.unpatch_model(cpu)
        lora.partially_load(cpu, extra_memory=model.model_size() // 4)
        cast = sum(1 for m in lora.model.modules() if getattr(m, "comfy_cast_weights", False))
        partial = lora.model.apply_model(x, sigma, c_crossattn=pos)
        lora.detach()
        after = model.model.apply_model(x, sigma, c_crossattn=pos)
    assert cast > 10 and lora.model.model_lowvram is False  # detached again
    assert (full - base).abs().max() > 1e-3
    torch.testing.assert_close(partial, full, atol=1e-5, rtol=0)
    assert torch.equal(after, base)


@pytest.mark.parametrize("key", ["diffusion_model.scale_shift_table",
                                 "diffusion_model.transformer_blocks.0.scale_shift_table"])
def test_patches_on_direct_parameters_apply_and_unpatch(loaded, key):
    """A weight patch on SANA's scale_shift_table (a parameter of a non-leaf module, which ModelPatcher's load list
    skips) changes the output exactly as the same change made by hand, and is undone on unload."""
    import comfy.model_management as mm

    _, engine, model, pos = loaded
    x, sigma = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([0.5])
    with torch.no_grad():
        base = model.model.apply_model(x, sigma, c_crossattn=pos)
        patched = model.clone()
        patched.add_patches({key: ("diff", (torch.full_like(model.model.state_dict()[key], 0.5),))}, 1.0)
        mm.load_models_gpu([patched])
        got = patched.model.apply_model(x, sigma, c_crossattn=pos)
        mm.unload_all_models()
        owner_name, _, name = key.removeprefix("diffusion_model.").rpartition(".")
        owner = engine.transformer.get_submodule(owner_name) if owner_name else engine.transformer
        getattr(owner, name).data += 0.5
        v = engine.transformer(x, encoder_hidden_states=pos, timestep=sigma * 1000, return_dict=False)[0]
        getattr(owner, name).data -= 0.5
        after = model.model.apply_model(x, sigma, c_crossattn=pos)
    torch.testing.assert_close(got, x - 0.5 * v, atol=1e-5, rtol=0)
    torch.testing.assert_close(after, base, atol=1e-6, rtol=0)


def test_mllm_partial_load_gives_the_same_conditioning(loaded):
    """InternVL3 + the bridge loaded with a third of their size as budget encode a prompt exactly as fully loaded."""
    from openuni_core import conditioning

    comfy, engine, _, _ = loaded
    patcher = comfy.module("nodes.native.parts").parts_of(engine).mllm

    def encode():
        ids = conditioning.tokenize(engine.tokenizer, [conditioning.generation_text("a house by a lake")])
        embeds = conditioning.text_token_embeds(engine.mllm, ids, torch.device("cpu"))
        return conditioning.run_queries(engine.mllm, engine.bridge.meta_queries, engine.bridge, embeds)

    full = encode()
    patcher.partially_load(torch.device("cpu"), extra_memory=patcher.model_size() // 3)
    try:
        cast = {type(m).__name__ for m in patcher.model.modules() if getattr(m, "comfy_cast_weights", False)}
        partial = encode()
    finally:
        patcher.detach()
    assert len(cast) >= 3  # e.g. Linear, Embedding and Qwen2's RMSNorm
    torch.testing.assert_close(partial, full, atol=1e-6, rtol=0)


def test_layers_left_in_ram_compute_on_the_load_device(comfy):
    """With a third of SANA as budget on a stand-in device ("meta"), the forward runs there: every layer left in RAM
    is copied to the device per call and the orphan tensors are moved on load (ComfyUI alone would leave diffusers'
    layers that do not fit on the CPU, and the forward would fail with a device mismatch)."""
    from openuni_core.loading import load_openuni

    native = comfy.module("nodes.native.diffusion")
    tiny = comfy.tiny
    engine = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")
    fmt = native.OpenUniLatentFormat(float(engine.vae.config.scaling_factor))
    meta = torch.device("meta")
    patcher = native.model_patcher(engine, fmt, load_device=meta, offload_device=torch.device("cpu"))
    patcher.partially_load(meta, extra_memory=patcher.model_size() // 3)
    assert patcher.model.model_lowvram
    pos = torch.zeros(1, 256, engine.transformer.config.caption_channels, device=meta)
    with torch.no_grad():
        out = patcher.model.apply_model(torch.zeros(1, 32, 8, 8, device=meta), torch.tensor([0.5], device=meta),
                                        c_crossattn=pos)
    assert out.device == meta and out.shape == (1, 32, 8, 8)  # (this engine's weights are gone: thrown away)
