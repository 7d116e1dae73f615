"""OpenUni's reference schedules (SIGMAS) and its exact DPM-Solver++ (SAMPLER) for SamplerCustom(Advanced).

Measured on the tiny test models (tests/test_native_sampling.py):
- Euler: diffusers' FlowMatchEulerDiscreteScheduler(shift) sigmas are shift(linspace(1, shift(1/1000), N)) (the
  end point shifted twice). ComfyUI's "normal" scheduler on a FLOW model computes the same formula in float32,
  so KSampler(euler, normal) reproduces OpenUni Sampler's euler; "simple" and the others are other schedules.
- DPM-Solver++: diffusers' DPMSolverMultistepScheduler(use_flow_sigmas) sigmas are shift((1 - 1/1000)·(N-k)/N),
  k = 0..N-1, then 0; no core scheduler gives them, and its timesteps are int64 (floor of σ·1000). ComfyUI's
  dpmpp_2m is k-diffusion's DPM-Solver++(2M) in the σ-space of x = x0 + σ·ε, a different solver on a flow
  model. `sample_openuni_dpmpp` is the flow DPM-Solver++ 2M (midpoint, first and last steps first order) on
  ComfyUI's sampler-function contract, so SamplerCustom(Advanced) reproduces the reference.
"""

from __future__ import annotations

import torch

import comfy.model_patcher
import comfy.model_sampling
import comfy.samplers

from .diffusion import INTEGER_TIMESTEPS
from ...openuni_core.errors import OpenUniError
from ...openuni_core.sampling import first_step

KINDS = ("dpmpp", "euler")
NUM_TRAIN_TIMESTEPS = 1000


def flow_shift(model_sampling) -> float:
    """The shift of a flow-matching MODEL's sampling (after ModelSamplingSD3, if one was applied)."""
    if not isinstance(model_sampling, comfy.model_sampling.ModelSamplingDiscreteFlow) or \
            getattr(model_sampling, "multiplier", NUM_TRAIN_TIMESTEPS) != NUM_TRAIN_TIMESTEPS:
        raise OpenUniError("OpenUni Scheduler needs a flow-matching MODEL such as the OpenUni Model Loader's; this "
                           "MODEL samples differently. Use BasicScheduler for it.")
    return float(model_sampling.shift)


def reference_sigmas(kind: str, steps: int, shift: float) -> torch.Tensor:
    """steps+1 float32 sigmas ending in 0, straight from diffusers' schedulers: "euler" FlowMatchEulerDiscreteScheduler,
    "dpmpp" DPMSolverMultistepScheduler as SANA's scheduler config sets it up (flow sigmas, final sigma zero)."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    if kind == "euler":
        s = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    elif kind == "dpmpp":
        s = DPMSolverMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, algorithm_type="dpmsolver++",
                                        solver_order=2, solver_type="midpoint", prediction_type="flow_prediction",
                                        use_flow_sigmas=True, flow_shift=shift, final_sigmas_type="zero",
                                        lower_order_final=True, timestep_spacing="linspace")
    else:
        raise OpenUniError(f"Unknown schedule {kind!r}; choose one of {', '.join(KINDS)}.")
    s.set_timesteps(int(steps))
    return s.sigmas.to(torch.float32).cpu()


def schedule(model_sampling, kind: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The reference schedule for the MODEL's shift; denoise < 1 keeps the last int(steps·denoise) steps, as OpenUni
    Sampler's image-to-image does (openuni_core.sampling.first_step), so equal settings give equal sigmas."""
    if not 0.0 < denoise <= 1.0:
        raise OpenUniError(f"denoise {denoise} is not allowed: it must be above 0 and at most 1.")
    if denoise < 1.0 and int(steps * denoise) < 1:
        raise OpenUniError(f"denoise {denoise} leaves no step to run out of {steps}; raise denoise or steps.")
    sigmas = reference_sigmas(kind, steps, flow_shift(model_sampling))
    return sigmas[first_step(steps, denoise):]


# ----- the exact DPM-Solver++ as a ComfyUI SAMPLER ---------------------------------------------------------------

def _lambda(sigma: torch.Tensor) -> torch.Tensor:
    """log(α/σ) on the flow path x_σ = (1-σ)·x0 + σ·ε (α = 1-σ)."""
    return torch.log(1.0 - sigma) - torch.log(sigma)


@torch.no_grad()
def sample_openuni_dpmpp(model, x, sigmas, extra_args=None, callback=None, disable=None, integer_timesteps=True):
    """Flow DPM-Solver++ 2M (midpoint, first order on the first and the last step), step for step what diffusers'
    DPMSolverMultistepScheduler (dpmsolver_multistep: multistep_dpm_solver_first/second_order_update) does with
    SANA's config. ComfyUI sampler contract (comfy/k_diffusion/sampling.py): model(x, σ·s_in, **extra_args) returns
    the denoised x0; callback gets {x, i, sigma, sigma_hat, denoised}. integer_timesteps: SANA gets floor(σ·1000)
    like diffusers' int64 timesteps."""
    extra_args = {} if extra_args is None else dict(extra_args)
    if integer_timesteps:
        options = comfy.model_patcher.create_model_options_clone(extra_args.get("model_options", {}))
        options.setdefault("transformer_options", {})[INTEGER_TIMESTEPS] = True
        extra_args["model_options"] = options
    s_in = x.new_ones([x.shape[0]])
    sigmas, x = sigmas.to(torch.float32), x.to(torch.float32)
    previous = None
    n = len(sigmas) - 1
    for i in range(n):
        denoised = model(x, sigmas[i] * s_in, **extra_args).to(torch.float32)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        s, t = sigmas[i], sigmas[i + 1]
        h = _lambda(t) - _lambda(s)
        step = (1.0 - t) * (torch.exp(-h) - 1.0)  # α_t·(e^{-h} - 1)
        x = (t / s) * x - step * denoised
        if previous is not None and i < n - 1:  # second order: the midpoint correction
            r0 = (_lambda(s) - _lambda(sigmas[i - 1])) / h
            x = x - 0.5 * step * (denoised - previous) / r0
        previous = denoised
    return x


class OpenUniDPMSolverPP(comfy.samplers.KSAMPLER):
    """KSAMPLER running `sample_openuni_dpmpp`, starting text-to-image where diffusers starts.

    The DPM schedule's first sigma is shift(0.999) ≈ 0.9997 < 1, so ComfyUI's noise scaling starts an empty latent
    at σ0·ε while diffusers (init_noise_sigma = 1) starts SANA from ε itself; for an empty latent without a mask
    KSAMPLER.sample gets ε/σ0, which its noise scaling turns back into ε.
    """

    def __init__(self, integer_timesteps: bool = True):
        super().__init__(sample_openuni_dpmpp, extra_options={"integer_timesteps": integer_timesteps})

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        if (denoise_mask is None and latent_image is not None and len(sigmas) > 1 and 0.0 < float(sigmas[0]) < 1.0
                and torch.count_nonzero(latent_image) == 0):
            noise = noise / sigmas[0]
        return super().sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
                              disable_pbar)
