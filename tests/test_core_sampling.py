"""Sampling equals diffusers' SanaPipeline on the same weights, conditioning, scheduler config and noise."""

import pytest
import torch

from openuni_core import sampling


def _pipeline(model, sampler):
    from diffusers import SanaPipeline

    # SanaPipeline insists on a tokenizer object (0.32 reads .padding_side) even when given embeddings;
    # it is never used to tokenize here.
    return SanaPipeline(tokenizer=model.tokenizer, text_encoder=None, vae=model.vae, transformer=model.transformer,
                        scheduler=sampling.make_scheduler(sampler, model.scheduler_config))


@pytest.mark.parametrize("sampler", ["dpmpp", "euler"])
def test_sampling_equals_sana_pipeline(model, sampler):
    pos = model.encode_prompt(["a red fox in the snow"])
    neg = model.encode_negative("")
    width, height, steps, cfg = 96, 64, 6, 4.5
    noise = sampling.initial_noise(1234, (1, 32, height // 32, width // 32))
    ours = model.sample(pos, neg, width=width, height=height, steps=steps, cfg=cfg, seed=1234, sampler=sampler)

    pipe = _pipeline(model, sampler)
    mask = torch.ones(1, 256, dtype=torch.long)
    ref = pipe(prompt=None, negative_prompt=None, prompt_embeds=pos.embeds, prompt_attention_mask=mask,
               negative_prompt_embeds=neg.embeds, negative_prompt_attention_mask=mask, latents=noise.clone(),
               guidance_scale=cfg, num_inference_steps=steps, height=height, width=width, output_type="latent",
               use_resolution_binning=False, complex_human_instruction=None, return_dict=False)[0]
    # SanaPipeline's output_type="latent" is what SANA denoises (latents × the DC-AE scaling factor); ours leave
    # the sampler unscaled, as ComfyUI's LATENT holds them.
    ref = ref / model.vae.config.scaling_factor
    assert ours.shape == ref.shape == (1, 32, 2, 3)
    assert (ours - ref).abs().max().item() <= 1e-4
    assert (ours - noise).abs().max() > 1e-2  # it really denoised


def test_same_seed_same_latents_and_batch_of_prompts(model):
    pos = model.encode_prompt(["a", "b"])
    kw = dict(width=64, height=64, steps=3, cfg=3.0, seed=7, batch_size=2)
    a = model.sample(pos, **kw)
    b = model.sample(pos, **kw)
    assert a.shape == (4, 32, 2, 2) and torch.equal(a, b)
    c = model.sample(pos, **{**kw, "seed": 8})
    assert not torch.equal(a, c)


def test_progress_and_interrupt_hooks(model):
    pos = model.encode_prompt("x")
    seen = []
    model.sample(pos, width=32, height=32, steps=4, cfg=2.0, seed=0, progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def interrupt():
        calls["n"] += 1
        if calls["n"] == 3:
            raise Stop

    with pytest.raises(Stop):
        model.sample(pos, width=32, height=32, steps=6, cfg=2.0, seed=0, interrupt=interrupt)
    # the model stays usable and a rerun equals an uninterrupted run
    a = model.sample(pos, width=32, height=32, steps=6, cfg=2.0, seed=0)
    b = model.sample(pos, width=32, height=32, steps=6, cfg=2.0, seed=0)
    assert torch.equal(a, b)


@pytest.mark.parametrize("sampler", ["dpmpp", "euler"])
def test_preview_hook_gets_the_x0_prediction(model, sampler):
    """preview(i, n, x0) after every step with the prediction of the final latents (unscaled, like the result): at the
    last step, whose next sigma is 0, that prediction is the result itself (a scaled, or noisy-x, preview is not)."""
    seen = []
    out = model.sample(model.encode_prompt("x"), width=64, height=32, steps=5, cfg=2.0, seed=1, sampler=sampler,
                       preview=lambda i, n, x0: seen.append((i, n, x0.cpu())))
    assert [(i, n) for i, n, _ in seen] == [(k, 5) for k in range(1, 6)]
    assert all(x0.shape == out.shape for _, _, x0 in seen)
    torch.testing.assert_close(seen[-1][2], out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", ["dpmpp", "euler"])
def test_image_to_image_strength(model, sampler):
    pos = model.encode_prompt("a red barn")
    img = torch.rand(1, 64, 96, 3)
    x0 = model.encode_images(img)
    steps = []
    weak = model.sample(pos, width=96, height=64, steps=10, cfg=3.0, seed=1, sampler=sampler, init_latents=x0,
                        strength=0.3, progress=lambda i, n: steps.append(n))
    strong = model.sample(pos, width=96, height=64, steps=10, cfg=3.0, seed=1, sampler=sampler, init_latents=x0,
                          strength=1.0)
    assert steps[-1] == 3  # only the last 30 % of the schedule runs
    assert (weak - x0).abs().mean() < (strong - x0).abs().mean()
    # image-to-image at full strength equals the manual formula: noise at sigma_0 then full sampling
    sched = sampling.make_scheduler(sampler, model.scheduler_config)
    sched.set_timesteps(10)
    noise = sampling.initial_noise(1, x0.shape)
    start = (1 - sched.sigmas[0]) * x0 + sched.sigmas[0] * noise
    assert torch.isfinite(strong).all() and not torch.equal(start, strong)


def test_initial_noise_is_drawn_on_cpu_from_seed():
    a = sampling.initial_noise(5, (1, 32, 2, 2))
    b = torch.randn((1, 32, 2, 2), generator=torch.Generator("cpu").manual_seed(5))
    assert a.device.type == "cpu" and torch.equal(a, b)


def test_compile_switch_gives_the_same_latents(tiny):
    """torch.compile of the SANA transformer (CPU inductor here) — same numbers as eager."""
    from openuni_core.loading import load_openuni

    m = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")
    pos = m.encode_prompt("compiled")
    eager = m.sample(pos, width=32, height=32, steps=2, cfg=2.0, seed=0)
    m.denoiser = torch.compile(m.transformer)  # what the CLI's --compile does
    compiled = m.sample(pos, width=32, height=32, steps=2, cfg=2.0, seed=0)
    assert hasattr(m.denoiser, "_orig_mod")
    assert (eager - compiled).abs().max() < 1e-4
