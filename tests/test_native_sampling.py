"""KSampler / SamplerCustomAdvanced on the loader's MODEL against OpenUni Sampler, the reference path (itself held to
diffusers' SanaPipeline by tests/test_core_sampling.py). fp32, tiny weights, the same seed; ComfyUI's CPU noise.

Runs inside ComfyUI (COMFYUI_DIR, ComfyUI's Python); skipped without it. The measured differences are printed
(`-s`); README's sampler table quotes them.
"""

from __future__ import annotations

import pytest
import torch

SIZE = 256  # tiny-B SANA: 8×8 latent cells
STEPS, CFG, SEED = 20, 4.5, 42


@pytest.fixture(scope="module")
def setup(comfy):
    engine, model, vae = comfy.load()
    pos, neg = comfy.call("OpenUniTextEncode", model=engine, prompt="a red fox in the snow", negative_prompt="")
    return comfy, engine, model, pos, neg


def empty(comfy, batch=1):
    return comfy.call("OpenUniEmptyLatent", width=SIZE, height=SIZE, batch_size=batch)[0]


def reference(setup, sampler, steps=STEPS, seed=SEED, **kw):
    comfy, engine, _, pos, neg = setup
    args = dict(model=engine, positive=pos, negative=neg, seed=seed, steps=steps, cfg=CFG, sampler=sampler,
                width=SIZE, height=SIZE, batch_size=1)
    return comfy.call("OpenUniSampler", **{**args, **kw})[0]["samples"]


def ksampler(setup, sampler_name, scheduler, latent=None, steps=STEPS, seed=SEED, denoise=1.0, model=None):
    comfy, _, base, pos, neg = setup
    return comfy.call("KSampler", model=model or base, seed=seed, steps=steps, cfg=CFG, sampler_name=sampler_name,
                      scheduler=scheduler, positive=pos, negative=neg, latent_image=latent or empty(comfy),
                      denoise=denoise)[0]["samples"]


def custom_advanced(setup, sampler, sigmas, latent=None, seed=SEED):
    comfy, _, model, pos, neg = setup
    guider = comfy.call("CFGGuider", model=model, positive=pos, negative=neg, cfg=CFG)[0]
    noise = comfy.call("RandomNoise", noise_seed=seed)[0]
    return comfy.call("SamplerCustomAdvanced", noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                      latent_image=latent or empty(comfy))[0]["samples"]


def diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


def test_comfy_noise_is_the_engines_noise(comfy):
    """KSampler's CPU noise (comfy.sample.prepare_noise) is bitwise the engine's, for any 64-bit seed; everything
    below relies on it."""
    import comfy.sample as sample

    from openuni_core.sampling import initial_noise

    for seed in (0, 42, 2**63 + 5, 2**64 - 1):
        assert torch.equal(sample.prepare_noise(torch.zeros(2, 32, 8, 8), seed), initial_noise(seed, (2, 32, 8, 8)))


def test_ksampler_euler_normal_reproduces_openuni_sampler(setup):
    """The recommended core pair: KSampler euler + normal equals OpenUni Sampler's euler within 1e-4 (also for a
    batch of 2 and without guidance); 'simple' is a different schedule (printed for the README table)."""
    ref = reference(setup, "euler")
    normal = ksampler(setup, "euler", "normal")
    print(f"\nKSampler euler/normal vs OpenUni Sampler euler: {diff(normal, ref):.1e}; "
          f"euler/simple {diff(ksampler(setup, 'euler', 'simple'), ref):.1e} (|ref| max {ref.abs().max():.2f})")
    assert diff(normal, ref) < 1e-4
    comfy = setup[0]
    two = ksampler(setup, "euler", "normal", latent=empty(comfy, 2), steps=8)
    assert diff(two, reference(setup, "euler", steps=8, batch_size=2)) < 1e-4


def test_sampler_custom_advanced_with_the_reference_samplers(setup):
    """SamplerCustomAdvanced + OpenUni Scheduler + euler / OpenUni DPM-Solver++ equal OpenUni Sampler's euler / dpmpp
    within 1e-4; ComfyUI's dpmpp_2m on the same sigmas is another solver (its distance is printed for the README)."""
    comfy, _, model, _, _ = setup
    euler = comfy.call("KSamplerSelect", sampler_name="euler")[0]
    dpm = comfy.call("OpenUniDPMSolverSampler")[0]
    dpmpp_2m = comfy.call("KSamplerSelect", sampler_name="dpmpp_2m")[0]
    for steps in (STEPS, 10):
        e_sig = comfy.call("OpenUniScheduler", model=model, schedule="euler", steps=steps, denoise=1.0)[0]
        d_sig = comfy.call("OpenUniScheduler", model=model, schedule="dpmpp", steps=steps, denoise=1.0)[0]
        ref_e, ref_d = reference(setup, "euler", steps=steps), reference(setup, "dpmpp", steps=steps)
        got_e, got_d = custom_advanced(setup, euler, e_sig), custom_advanced(setup, dpm, d_sig)
        other = custom_advanced(setup, dpmpp_2m, d_sig)
        print(f"\n{steps} steps: euler + OpenUni Scheduler {diff(got_e, ref_e):.1e}; OpenUni DPM-Solver++ + OpenUni "
              f"Scheduler {diff(got_d, ref_d):.1e}; dpmpp_2m + OpenUni Scheduler(dpmpp) {diff(other, ref_d):.1e}; "
              f"KSampler dpmpp_2m/normal {diff(ksampler(setup, 'dpmpp_2m', 'normal', steps=steps), ref_d):.1e}; "
              f"dpmpp_2m/simple {diff(ksampler(setup, 'dpmpp_2m', 'simple', steps=steps), ref_d):.1e}")
        assert diff(got_e, ref_e) < 1e-4 and diff(got_d, ref_d) < 1e-4
        assert diff(other, ref_d) > 1e-3  # the README's claim that dpmpp_2m is a different solver here


def test_image_to_image_denoise_follows_openuni_sampler(setup):
    """OpenUni Scheduler's denoise keeps the last int(steps·denoise) steps, as OpenUni Sampler's image-to-image does,
    for both samplers (catches BasicScheduler's rule, steps/denoise, which differs for e.g. 20 × 0.65)."""
    comfy, _, model, _, _ = setup
    init = {"samples": torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(1))}
    samplers = {"euler": comfy.call("KSamplerSelect", sampler_name="euler")[0],
                "dpmpp": comfy.call("OpenUniDPMSolverSampler")[0]}
    for kind, denoise in (("euler", 0.65), ("dpmpp", 0.5), ("dpmpp", 0.33)):
        sigmas = comfy.call("OpenUniScheduler", model=model, schedule=kind, steps=STEPS, denoise=denoise)[0]
        assert len(sigmas) == int(STEPS * denoise) + 1
        got = custom_advanced(setup, samplers[kind], sigmas, latent=init, seed=7)
        ref = reference(setup, kind, seed=7, latent=init, denoise=denoise)
        print(f"\nimage-to-image {kind} denoise {denoise}: {diff(got, ref):.1e}")
        assert diff(got, ref) < 1e-4


def test_integer_timesteps_match_diffusers(setup):
    """The DPM-Solver++ sampler floors σ·1000 of OpenUni Scheduler's float32 sigmas; that is diffusers' int64
    timesteps for every step count 1..200."""
    from diffusers import DPMSolverMultistepScheduler

    comfy, engine, model, _, _ = setup
    mismatched = []
    for steps in range(1, 201):
        reference_scheduler = DPMSolverMultistepScheduler.from_config(engine.scheduler_config)
        reference_scheduler.set_timesteps(steps)
        sigmas = comfy.call("OpenUniScheduler", model=model, schedule="dpmpp", steps=steps, denoise=1.0)[0]
        if not torch.equal((sigmas[:-1] * 1000).floor().long(), reference_scheduler.timesteps.long()):
            mismatched.append(steps)
    assert not mismatched


def test_shift_override_and_easycache(setup):
    """Model patches: core ModelSamplingSD3 with shift 6 equals the engine with flow_shift 6 (OpenUni Scheduler follows
    the patched shift too); core EasyCache wraps SANA's forward and skips steps."""
    from comfy_extras.nodes_easycache import EasyCacheNode
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    from openuni_core import sampling

    comfy, engine, model, pos, neg = setup
    shifted = ModelSamplingSD3().patch(model, 6.0)[0]
    got = ksampler(setup, "euler", "normal", model=shifted)
    ref = sampling.sample(engine.transformer, {**engine.scheduler_config, "flow_shift": 6.0}, pos[0][0], neg[0][0],
                          width=SIZE, height=SIZE, steps=STEPS, cfg=CFG, seed=SEED, sampler="euler",
                          scaling_factor=float(engine.vae.config.scaling_factor)).cpu()
    print(f"\nModelSamplingSD3(6) + KSampler euler/normal vs engine flow_shift 6: {diff(got, ref):.1e}")
    assert diff(got, ref) < 1e-4
    sigmas = comfy.call("OpenUniScheduler", model=shifted, schedule="dpmpp", steps=STEPS, denoise=1.0)[0]
    assert sigmas[1] > comfy.call("OpenUniScheduler", model=model, schedule="dpmpp", steps=STEPS, denoise=1.0)[0][1]

    calls = []
    sana = model.model.diffusion_model
    original = sana._forward
    sana._forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        cached = EasyCacheNode.execute(model, 1.0, 0.15, 0.95, False).result[0]
        out = ksampler(setup, "euler", "normal", model=cached)
    finally:
        del sana._forward
    assert torch.isfinite(out).all() and 0 < len(calls) < STEPS
