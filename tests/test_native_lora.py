"""SANA LoRAs on the loader's MODEL against diffusers' own LoRA loading (peft) of the same file. Runs inside ComfyUI
(COMFYUI_DIR, ComfyUI's Python); skipped without it."""

from __future__ import annotations

import copy

import pytest
import torch

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv_inverted", "conv_point", "proj_out"]


def write_peft_lora(transformer, folder, r=4, alpha=8, seed=0) -> str:
    """A random PEFT LoRA on a copy of SANA, written by diffusers' SanaPipeline.save_lora_weights (what trainers
    use): `transformer.…lora_A/lora_B` tensors, lora_alpha only in the file's metadata."""
    from diffusers import SanaPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    t = copy.deepcopy(transformer)
    t.add_adapter(LoraConfig(r=r, lora_alpha=alpha, target_modules=TARGETS, init_lora_weights=False))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in t.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    SanaPipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(t),
                                   transformer_lora_adapter_metadata={"r": r, "lora_alpha": alpha,
                                                                      "target_modules": TARGETS},
                                   weight_name="sana_test_lora.safetensors")
    return "sana_test_lora.safetensors"


@pytest.fixture(scope="module")
def lora(comfy):
    engine, model, _ = comfy.load()
    pristine = copy.deepcopy(engine.transformer)  # before any patcher patches the shared SANA in place
    name = write_peft_lora(pristine, comfy.base / "models" / "loras")
    return comfy, engine, model, pristine, name


def diffusers_with_lora(pristine, path, weight):
    """What SanaPipeline.load_lora_weights does: lora_state_dict (with the adapter metadata), then
    load_lora_into_transformer, at `weight` via set_adapters."""
    from diffusers import SanaPipeline

    t = copy.deepcopy(pristine)
    sd, meta = SanaPipeline.lora_state_dict(str(path), return_lora_metadata=True)
    SanaPipeline.load_lora_into_transformer(sd, transformer=t, adapter_name="test", metadata=meta)
    t.set_adapters(["test"], weights=[weight])
    return t


def max_denoise_diff(patcher, transformer, pos) -> float:
    """MODEL's denoised prediction vs x - σ·SANA(x) at two noise levels (the flow relation the MODEL implements)."""
    import comfy.model_management as mm

    x = torch.randn(2, 32, 8, 8, generator=torch.Generator().manual_seed(3))
    mm.load_models_gpu([patcher])
    worst = 0.0
    with torch.no_grad():
        for sigma in (0.9, 0.4):
            s = torch.full((2,), sigma)
            cond = pos.expand(2, -1, -1)
            den = patcher.model.apply_model(x, s, c_crossattn=cond)
            v = transformer(x, encoder_hidden_states=cond, timestep=s * 1000, return_dict=False)[0]
            worst = max(worst, (den - (x - sigma * v)).abs().max().item())
    return worst


def test_peft_lora_equals_diffusers_loading(lora):
    """OpenUni LoRA Loader on a diffusers/PEFT file equals diffusers' load_lora_weights within 1e-4 at strength 1 and
    0.5 (alpha/r = 2 read from the metadata: without it the scale would be off by 2); strength 0 returns the MODEL
    unchanged; the core LoraLoaderModelOnly cannot map these names (why the node exists)."""
    comfy, engine, model, pristine, name = lora
    pos = comfy.call("OpenUniTextEncode", model=engine, prompt="a fox", negative_prompt="")[0][0][0]
    path = comfy.base / "models" / "loras" / name
    for strength in (1.0, 0.5):
        patched = comfy.call("OpenUniLoraLoader", model=model, lora_name=name, strength_model=strength)[0]
        d = max_denoise_diff(patched, diffusers_with_lora(pristine, path, strength), pos)
        print(f"\nOpenUni LoRA Loader strength {strength} vs diffusers load_lora_weights: {d:.1e}")
        assert d < 1e-4 and patched is not model and len(patched.patches) > 0
    assert comfy.call("OpenUniLoraLoader", model=model, lora_name=name, strength_model=0.0)[0] is model
    assert max_denoise_diff(model, pristine, pos) < 1e-5  # the base MODEL is unpatched again
    core = comfy.call("LoraLoaderModelOnly", model=model, lora_name=name, strength_model=1.0)[0]
    assert len(core.patches) == 0


def test_kohya_names_load_in_the_core_loader(lora):
    """A kohya-style file (lora_unet_<key with _>, .alpha tensors) loads in the core LoraLoaderModelOnly and in ours
    alike, with the same result as diffusers on the equivalent PEFT file."""
    from safetensors.torch import load_file, save_file

    comfy, engine, model, pristine, name = lora
    folder = comfy.base / "models" / "loras"
    peft = load_file(str(folder / name))
    kohya = {}
    for k, v in peft.items():
        module, kind = k.removeprefix("transformer.").rsplit(".lora_", 1)
        key = "lora_unet_" + module.replace(".", "_")
        kohya[f"{key}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = v
        if kind.startswith("A"):
            kohya[f"{key}.alpha"] = torch.tensor(8.0)
    save_file(kohya, str(folder / "sana_kohya.safetensors"))
    pos = comfy.call("OpenUniTextEncode", model=engine, prompt="a fox", negative_prompt="")[0][0][0]
    reference = diffusers_with_lora(pristine, folder / name, 1.0)
    core = comfy.call("LoraLoaderModelOnly", model=model, lora_name="sana_kohya.safetensors", strength_model=1.0)[0]
    ours = comfy.call("OpenUniLoraLoader", model=model, lora_name="sana_kohya.safetensors", strength_model=1.0)[0]
    assert max_denoise_diff(core, reference, pos) < 1e-4 and max_denoise_diff(ours, reference, pos) < 1e-4


def test_foreign_loras_are_refused_with_their_keys(lora):
    """A Flux LoRA names its unmatched keys; a SANA LoRA of another width (same names) is refused too."""
    from safetensors.torch import save_file

    comfy, _, model, pristine, _ = lora
    OpenUniError = comfy.module("openuni_core.errors").OpenUniError
    folder = comfy.base / "models" / "loras"
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.zeros(8, 4)},
              str(folder / "flux.safetensors"))
    with pytest.raises(OpenUniError, match=r"not a LoRA for OpenUni's SANA: none of its 2 tensors .*"
                                           r"lora_unet_double_blocks_0_img_attn_qkv"):
        comfy.call("OpenUniLoraLoader", model=model, lora_name="flux.safetensors", strength_model=1.0)
    wide = {"transformer.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 999),
            "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(999, 4)}
    save_file(wide, str(folder / "other_size.safetensors"))
    with pytest.raises(OpenUniError, match="trained for another SANA size"):
        comfy.call("OpenUniLoraLoader", model=model, lora_name="other_size.safetensors", strength_model=1.0)


def test_a_lora_clone_and_openuni_sampler_share_sana_safely(lora):
    """A LoRA MODEL patches the shared SANA in place when KSampler loads it; OpenUni Sampler (and KSampler on the base
    MODEL) afterwards get the unpatched weights, because every use loads the base patcher first (base → LoRA → base →
    LoRA repeat exactly)."""
    comfy, engine, model, _, name = lora
    pos, neg = comfy.call("OpenUniTextEncode", model=engine, prompt="a fox", negative_prompt="")
    latent = comfy.call("OpenUniEmptyLatent", width=256, height=256, batch_size=1)[0]
    patched = comfy.call("OpenUniLoraLoader", model=model, lora_name=name, strength_model=1.0)[0]

    def ks(m):
        return comfy.call("KSampler", model=m, seed=1, steps=4, cfg=4.5, sampler_name="euler", scheduler="normal",
                          positive=pos, negative=neg, latent_image=latent, denoise=1.0)[0]["samples"]

    def ours():
        return comfy.call("OpenUniSampler", model=engine, positive=pos, negative=neg, seed=1, steps=4, cfg=4.5,
                          sampler="euler", width=256, height=256, batch_size=1)[0]["samples"]

    base, with_lora = ks(model), ks(patched)
    assert (base - with_lora).abs().max() > 1e-2
    reference = ours()
    assert torch.equal(ks(patched), with_lora) and torch.equal(ks(model), base)
    ks(patched)
    assert torch.equal(ours(), reference) and (reference - base).abs().max() < 1e-4
