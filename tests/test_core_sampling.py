"""Sampling equals diffusers' SanaPipeline on the same weights, conditioning, scheduler config and noise.

The references are built here from diffusers' own classes and the SANA folder's scheduler_config.json (read
in the test), never from the engine's sampling helpers.
"""

import json
from pathlib import Path

import pytest
import torch

from openuni_core import sampling
from references import reference_encode


def _scheduler(sampler, sana_folder):
    """diffusers' scheduler for `sampler`, built from the SANA folder's own scheduler_config.json: DPM-Solver++
    as SANA ships it, or the flow-matching Euler scheduler with the same flow shift."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    config = json.loads((Path(sana_folder) / "scheduler" / "scheduler_config.json").read_text())
    if sampler == "dpmpp":
        return DPMSolverMultistepScheduler.from_config(config)
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=config["num_train_timesteps"], shift=config["flow_shift"])


def _pipeline(model, scheduler):
    from diffusers import SanaPipeline

    # SanaPipeline insists on a tokenizer object (0.32 reads .padding_side) even when given embeddings;
    # it is never used to tokenize here.
    return SanaPipeline(tokenizer=model.tokenizer, text_encoder=None, vae=model.vae, transformer=model.transformer,
                        scheduler=scheduler)


def _pipeline_latents(pipe, pos, neg, start, *, steps, cfg):
    """SanaPipeline's denoising loop from `start` (latents in SANA's scaled space) → final latents, still scaled."""
    mask = torch.ones(1, 256, dtype=torch.long)
    return pipe(prompt=None, negative_prompt=None, prompt_embeds=pos.embeds, prompt_attention_mask=mask,
                negative_prompt_embeds=neg.embeds, negative_prompt_attention_mask=mask, latents=start.clone(),
                guidance_scale=cfg, num_inference_steps=steps, height=start.shape[-2] * 32,
                width=start.shape[-1] * 32, output_type="latent", use_resolution_binning=False,
                complex_human_instruction=None, return_dict=False)[0]


def _cpu_noise(seed, shape):
    """The README's promise: noise drawn on the CPU by torch's generator seeded with `seed`."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


@pytest.mark.parametrize("sampler", ["dpmpp", "euler"])
def test_sampling_equals_sana_pipeline(model, tiny, sampler):
    """Guards against e.g. a wrong CFG formula, a wrong timestep scale, a wrong flow shift for euler, or a missing
    scaling_factor on the way out of SANA (each a one-line change in sampling.py)."""
    pos = model.encode_prompt(["a red fox in the snow"])
    neg = model.encode_negative("")
    width, height, steps, cfg = 96, 64, 6, 4.5
    noise = _cpu_noise(1234, (1, 32, height // 32, width // 32))
    ours = model.sample(pos, neg, width=width, height=height, steps=steps, cfg=cfg, seed=1234, sampler=sampler)

    ref = _pipeline_latents(_pipeline(model, _scheduler(sampler, tiny.sana)), pos, neg, noise, steps=steps, cfg=cfg)
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


def _start_sana_pipeline_at(monkeypatch, start: int) -> None:
    """Make SanaPipeline begin at step `start` of its scheduler's own set_timesteps schedule, the way diffusers'
    image-to-image pipelines do: the loop runs timesteps[start·order:] and the scheduler's begin index is set,
    while the scheduler keeps its whole schedule (DPM-Solver++ reads its length to pick the final order)."""
    from diffusers.pipelines.sana import pipeline_sana

    full = pipeline_sana.retrieve_timesteps

    def retrieve_timesteps(scheduler, *args, **kwargs):
        timesteps, n = full(scheduler, *args, **kwargs)
        scheduler.set_begin_index(start * scheduler.order)
        return timesteps[start * scheduler.order:], n - start

    monkeypatch.setattr(pipeline_sana, "retrieve_timesteps", retrieve_timesteps)


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
@pytest.mark.parametrize("steps,denoise", [(10, 0.3), (6, 0.5), (5, 0.8), (4, 1.0)])
def test_image_to_image_equals_diffusers_from_the_denoise_start_point(model, tiny, reference_vae, monkeypatch, sampler,
                                                                      steps, denoise):
    """Image → VAE encode → sampler with denoise, against a computation written here from diffusers alone:
    AutoencoderDC.encode(2·image−1).latent × scaling_factor, noised with the flow-matching formula
    x_t = (1−σ)·x0 + σ·noise at the sigma where diffusers' image-to-image rule starts (t_start = steps −
    int(steps·denoise), on the scheduler's own set_timesteps schedule), SanaPipeline's loop from there, ÷ the
    scaling factor. Guards against: starting from full noise (`latents = noise`, which throws the image away),
    noising at sigmas[0] instead of the start sigma, running the whole schedule, or dropping (or doubling)
    `* scaling_factor` on the image latents going into SANA."""
    pos, neg = model.encode_prompt("a red barn"), model.encode_negative("")
    g = torch.Generator().manual_seed(11)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 6, generator=g), size=(64, 96), mode="bilinear")
    image = image.permute(0, 2, 3, 1).contiguous()  # ComfyUI IMAGE [1,64,96,3] in 0..1
    progress = []
    ours = model.sample(pos, neg, width=96, height=64, steps=steps, cfg=3.0, seed=21, sampler=sampler,
                        init_latents=model.encode_images(image), strength=denoise,
                        progress=lambda i, n: progress.append(n))

    factor = reference_vae.config.scaling_factor  # diffusers' own AutoencoderDC of the same folder
    x0 = reference_encode(reference_vae, image) * factor
    t_start = steps - min(int(steps * denoise), steps)  # diffusers' img2img get_timesteps
    scheduler = _scheduler(sampler, tiny.sana)
    scheduler.set_timesteps(steps)
    sigma = scheduler.sigmas[t_start * scheduler.order]
    start = (1 - sigma) * x0 + sigma * _cpu_noise(21, x0.shape)
    _start_sana_pipeline_at(monkeypatch, t_start)
    ref = _pipeline_latents(_pipeline(model, scheduler), pos, neg, start, steps=steps, cfg=3.0) / factor

    assert ours.shape == ref.shape == (1, 32, 2, 3)
    assert progress[-1] == steps - t_start
    assert (ours - ref).abs().max().item() <= 1e-4
    assert factor != 1.0  # the tiny DC-AE has a real scaling factor, so dropping it shows


def test_initial_noise_is_drawn_on_cpu_from_seed():
    a = sampling.initial_noise(5, (1, 32, 2, 2))
    b = _cpu_noise(5, (1, 32, 2, 2))
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


def test_dpmpp_above_500_steps_runs_to_the_end(model, tiny):
    """Above 500 steps DPM-Solver++'s first timesteps repeat (999, 999, 998, ...); left to find its start index from
    the first timestep's value, diffusers' scheduler takes the second and steps past the end (IndexError after the
    whole run). Equal to diffusers' own scheduler stepped from index 0 on SANA's raw output (cfg 1). Would catch
    `set_begin_index` called only for image-to-image again."""
    steps = 600
    pos = model.encode_prompt(["a red fox"])
    ours = model.sample(pos, None, width=32, height=32, steps=steps, cfg=1.0, seed=3, sampler="dpmpp")
    scheduler = _scheduler("dpmpp", tiny.sana)
    scheduler.set_timesteps(steps)
    assert scheduler.timesteps[0] == scheduler.timesteps[1]  # the repeated start this test is about
    scheduler.set_begin_index(0)
    latents = _cpu_noise(3, (1, 32, 1, 1))
    with torch.no_grad():
        for t in scheduler.timesteps:
            v = model.transformer(latents, encoder_hidden_states=pos.embeds, timestep=t.expand(1),
                                  return_dict=False)[0]
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
    ref = latents / model.vae.config.scaling_factor
    assert torch.isfinite(ours).all() and (ours - ref).abs().max().item() <= 1e-4
