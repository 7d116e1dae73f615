"""The loader's MODEL output: SANA as a ComfyUI BaseModel over the engine's own weights, OpenUni conditioning only,
and inpainting with ComfyUI's masks. Runs inside ComfyUI (COMFYUI_DIR, ComfyUI's Python); skipped without it."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def loaded(comfy):
    engine, model, vae = comfy.load()
    pos, neg = comfy.call("OpenUniTextEncode", model=engine, prompt="a red fox", negative_prompt="")
    return comfy, engine, model, vae, pos, neg


def test_model_is_the_engines_sana(loaded):
    """Keys are `diffusion_model.<diffusers SANA key>` on the very same tensors (no second copy of the weights);
    flow-matching sampling with the SANA folder's shift; a 32-channel latent format with DC-AE's scaling factor;
    the denoised prediction is x - σ·SANA(x, σ·1000), the flow relation diffusers' scheduler uses."""
    import comfy.model_sampling

    _, engine, model, _, pos, _ = loaded
    sd = model.model.state_dict()
    sana = engine.transformer.state_dict()
    assert {k.removeprefix("diffusion_model.") for k in sd if k.startswith("diffusion_model.")} == set(sana)
    assert all(sd["diffusion_model." + k].data_ptr() == v.data_ptr() for k, v in sana.items())
    sampling = model.get_model_object("model_sampling")
    assert isinstance(sampling, comfy.model_sampling.ModelSamplingDiscreteFlow)
    assert isinstance(sampling, comfy.model_sampling.CONST)
    assert sampling.shift == engine.scheduler_config["flow_shift"] and float(sampling.sigma_max) == 1.0
    fmt = model.get_model_object("latent_format")
    assert fmt.latent_channels == 32 and fmt.scale_factor == engine.vae.config.scaling_factor
    x = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        denoised = model.model.apply_model(x, torch.tensor([0.7]), c_crossattn=pos[0][0])
        v = engine.transformer(x, encoder_hidden_states=pos[0][0], timestep=torch.tensor([700.0]),
                               return_dict=False)[0]
    torch.testing.assert_close(denoised, x - 0.7 * v, atol=1e-5, rtol=0)


def test_only_openuni_conditioning_drives_the_model(loaded):
    """KSampler refuses conditioning from another model's text encoder (no OpenUni marker, e.g. CLIP's [1,77,768])
    and conditioning encoded by another OpenUni model, with the messages OpenUni Sampler gives."""
    comfy, _, model, _, pos, neg = loaded
    OpenUniError = comfy.module("openuni_core.errors").OpenUniError
    latent = comfy.call("OpenUniEmptyLatent", width=64, height=64, batch_size=1)[0]
    args = dict(model=model, seed=1, steps=1, cfg=4.5, sampler_name="euler", scheduler="normal", latent_image=latent,
                denoise=1.0)
    clip = [[torch.randn(1, 77, 768), {"pooled_output": torch.randn(1, 768)}]]
    with pytest.raises(OpenUniError, match="did not come from an OpenUni encode node"):
        comfy.call("KSampler", positive=clip, negative=neg, **args)
    other = [[pos[0][0], {**pos[0][1], "openuni_model_id": "another"}]]
    with pytest.raises(OpenUniError, match="different OpenUni model"):
        comfy.call("KSampler", positive=other, negative=neg, **args)


def test_concat_in_ksampler_equals_openuni_sampler(loaded):
    """Conditioning (Concat) of two prompts: KSampler (ComfyUI repeats token sequences to a common length) and OpenUni
    Sampler (the engine does the same) give the same image."""
    comfy, engine, model, _, pos, neg = loaded
    cat = comfy.call("OpenUniTextEncode", model=engine, prompt="a black cat", negative_prompt="")[0]
    both = comfy.call("ConditioningConcat", conditioning_to=pos, conditioning_from=cat)[0]
    latent = comfy.call("OpenUniEmptyLatent", width=256, height=256, batch_size=1)[0]
    native = comfy.call("KSampler", model=model, seed=3, steps=8, cfg=4.5, sampler_name="euler", scheduler="normal",
                        positive=both, negative=neg, latent_image=latent, denoise=1.0)[0]["samples"]
    ours = comfy.call("OpenUniSampler", model=engine, positive=both, negative=neg, seed=3, steps=8, cfg=4.5,
                      sampler="euler", width=256, height=256, batch_size=1)[0]["samples"]
    torch.testing.assert_close(native, ours, atol=1e-4, rtol=0)


def test_inpainting_keeps_the_outside(loaded):
    """Set Latent Noise Mask + KSampler (also with Differential Diffusion) and VAE Encode (for Inpainting) + KSampler
    repaint inside the mask and keep the input latent outside it (ComfyUI's own masking on the MODEL); OpenUni Sampler
    on the same masked latent keeps the same outside."""
    comfy, engine, model, vae, pos, neg = loaded
    image = torch.rand(1, 256, 256, 3, generator=torch.Generator().manual_seed(5))
    encoded = comfy.call("VAEEncode", vae=vae, pixels=image)[0]
    mask = torch.zeros(1, 256, 256)
    mask[:, 96:192, 64:160] = 1.0  # latent cells 3..5 × 2..4 of 8×8
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[3:6, 2:5] = True
    masked = comfy.call("SetLatentNoiseMask", samples=encoded, mask=mask)[0]
    args = dict(seed=4, steps=6, cfg=4.5, positive=pos, negative=neg)
    for denoise in (1.0, 0.6):
        out = comfy.call("KSampler", model=model, sampler_name="euler", scheduler="normal", latent_image=masked,
                         denoise=denoise, **args)[0]["samples"]
        torch.testing.assert_close(out[..., ~inside], encoded["samples"][..., ~inside], atol=1e-5, rtol=0)
        assert (out - encoded["samples"])[..., inside].abs().max() > 0.1
    ours = comfy.call("OpenUniSampler", model=engine, sampler="euler", width=256, height=256, batch_size=1,
                      latent=masked, denoise=0.6, **args)[0]["samples"]
    torch.testing.assert_close(ours[..., ~inside], encoded["samples"][..., ~inside], atol=1e-5, rtol=0)

    from comfy_extras.nodes_differential_diffusion import DifferentialDiffusion

    soft = DifferentialDiffusion.execute(model).result[0]
    out = comfy.call("KSampler", model=soft, sampler_name="euler", scheduler="normal", latent_image=masked,
                     denoise=1.0, **args)[0]["samples"]
    torch.testing.assert_close(out[..., ~inside], encoded["samples"][..., ~inside], atol=1e-5, rtol=0)

    for_inpaint = comfy.call("VAEEncodeForInpaint", vae=vae, pixels=image, mask=mask, grow_mask_by=0)[0]
    out = comfy.call("KSampler", model=model, sampler_name="euler", scheduler="normal", latent_image=for_inpaint,
                     denoise=1.0, **args)[0]["samples"]
    torch.testing.assert_close(out[..., ~inside], for_inpaint["samples"][..., ~inside], atol=1e-5, rtol=0)
