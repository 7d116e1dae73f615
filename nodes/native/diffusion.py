"""SANA (OpenUni's diffusion transformer) as a ComfyUI MODEL, so KSampler, SamplerCustom(Advanced), model patches
and LoRA work on it.

What ComfyUI needs from a MODEL (comfy.model_base.BaseModel inside a comfy.model_patcher.ModelPatcher):
- `model_sampling`: FLOW (ModelSamplingDiscreteFlow + CONST: x_σ = (1-σ)·x0 + σ·ε, the model predicts
  v = ε - x0, timestep = σ·1000), shift = the SANA folder's scheduler `flow_shift`;
- `latent_format`: 32 channels, scale_factor = DC-AE's scaling_factor, so a LATENT holds DC-AE's own latents
  and SANA sees latents × scaling_factor, what it was trained on;
- `extra_conds`: the CONDITIONING tensor (OpenUni's query embeddings) → the `context` SANA attends to;
- `diffusion_model(x, timesteps, context=..., transformer_options=...)`: a module whose weights ModelPatcher
  patches by state-dict key (LoRA), moves and partially loads.

`SanaDiffusionModel` is that module around the engine's own SanaTransformer2DModel: it registers SANA's child
modules and direct parameters under the same names (no copy), so the MODEL's keys are
`diffusion_model.<diffusers SANA key>` and patches land in the very modules the engine runs. SANA itself is
not registered as a submodule (its modules would appear twice in state_dict()/named_modules()).
"""

from __future__ import annotations

import contextlib

import torch

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.supported_models_base

from . import lowvram
from ..conditioning import MARKER, foreign_conditioning_error
from ...openuni_core.errors import OpenUniError
from ...openuni_core.options import LATENT_CHANNELS
from ...openuni_core.precision import NonFiniteError, advice

INTEGER_TIMESTEPS = "openuni_integer_timesteps"  # transformer_options flag set by the exact DPM-Solver++ sampler


class OpenUniLatentFormat(comfy.latent_formats.LatentFormat):
    """DC-AE f32c32 latents. process_in multiplies a LATENT (DC-AE's own latents) by the scaling factor.

    latent_rgb_factors(_bias): the live-preview map, which acts on the sampler's (scaled) latents. It is fitted
    from the loaded DC-AE (preview.py) the first time a previewer asks for it: `rgb_source()` returns
    (factors [32][3], bias [3]) or None.
    """

    latent_channels = LATENT_CHANNELS
    latent_dimensions = 2
    taesd_decoder_name = None  # no TAESD exists for DC-AE

    def __init__(self, scale_factor: float, rgb_source=None):
        self.scale_factor = float(scale_factor)
        self.rgb_source = rgb_source
        self._rgb = None

    def _fitted(self):
        if self._rgb is None and self.rgb_source is not None:
            self._rgb = self.rgb_source() or (None, None)
        return self._rgb or (None, None)

    @property
    def latent_rgb_factors(self):
        return self._fitted()[0]

    @property
    def latent_rgb_factors_bias(self):
        return self._fitted()[1]


class OpenUniModelConfig(comfy.supported_models_base.BASE):
    """The per-model settings BaseModel reads. No UNet is built: the engine's SANA is brought in."""

    unet_config = {"disable_unet_model_creation": True}
    unet_extra_config = {}
    latent_format = OpenUniLatentFormat
    memory_usage_factor = 1.0  # unused: OpenUniSana.memory_required
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]

    def __init__(self, *, flow_shift: float, latent_format: OpenUniLatentFormat, caption_channels: int,
                 dtype: torch.dtype):
        self.latent_format = lambda: latent_format  # BASE.__init__ instantiates `latent_format`: hand it ours
        super().__init__({"disable_unet_model_creation": True, "caption_channels": caption_channels,
                          "in_channels": LATENT_CHANNELS, "dtype": dtype})
        self.sampling_settings = {"shift": float(flow_shift), "multiplier": 1000}

    def inpaint_model(self):
        return False


class SanaDiffusionModel(torch.nn.Module):
    """ComfyUI's `diffusion_model` for SANA, sharing the engine's SanaTransformer2DModel modules and parameters."""

    def __init__(self, transformer):
        super().__init__()
        object.__setattr__(self, "sana", transformer)  # a plain attribute, not a submodule (see the module doc)
        for name, child in transformer.named_children():
            self.add_module(name, child)
        for name, p in transformer.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in transformer.named_buffers(recurse=False):
            self.register_buffer(name, b, persistent=name not in transformer._non_persistent_buffers_set)
        cfg = transformer.config
        self.timestep_scale = float(getattr(cfg, "timestep_scale", 1.0) or 1.0)
        self.in_channels = int(cfg.in_channels)
        self.learned_sigma = int(cfg.out_channels) == 2 * int(cfg.in_channels)
        self.caption_channels = int(cfg.caption_channels)

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    @contextlib.contextmanager
    def _own_tensors_in_sana(self):
        """SANA uses OUR direct parameters/buffers for the call. ModelPatcher patches a direct parameter by setattr
        on the module owning the key — this adapter for `diffusion_model.scale_shift_table` — which replaces the
        adapter's attribute, not SANA's; installing ours for the call (and restoring SANA's after) makes such
        patches count and leaves the engine's SANA as it was. Child modules are shared objects already."""
        sana = self.sana
        saved_p = {n: sana._parameters[n] for n in self._parameters if n in sana._parameters}
        saved_b = {n: sana._buffers[n] for n in self._buffers if n in sana._buffers}
        try:
            sana._parameters.update({n: self._parameters[n] for n in saved_p})
            sana._buffers.update({n: self._buffers[n] for n in saved_b})
            yield
        finally:
            sana._parameters.update(saved_p)
            sana._buffers.update(saved_b)

    def forward(self, x, timesteps, context=None, control=None, transformer_options={}, **kwargs):
        # DIFFUSION_MODEL wrappers (EasyCache, ...) read transformer_options as the LAST positional argument.
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward, self,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                     transformer_options),
        ).execute(x, timesteps, context, control, transformer_options, **kwargs)

    def _forward(self, x, timesteps, context, control, transformer_options, **kwargs):
        if transformer_options.get(INTEGER_TIMESTEPS):
            # diffusers' DPMSolverMultistepScheduler hands SANA int64 timesteps (its set_timesteps casts them);
            # the exact DPM-Solver++ sampler asks for the same.
            timesteps = timesteps.floor()
        t = timesteps.to(x.dtype) * self.timestep_scale
        with self._own_tensors_in_sana():
            out = self.sana(x, encoder_hidden_states=context, timestep=t, return_dict=False)[0]
        if not out.is_meta and not torch.isfinite(out).all():  # meta: a shape-only run has no values to check
            # ComfyUI's samplers would carry the NaN on to a black image. The engine re-runs an fp16 overflow in a
            # wider dtype; inside another node's sampling loop that cannot be done, so stop with the fix instead.
            raise OpenUniError(advice(NonFiniteError("sana", "while sampling"), out.dtype))
        return out[:, :self.in_channels] if self.learned_sigma else out


class OpenUniSana(comfy.model_base.BaseModel):
    """The OpenUni MODEL: FLOW model sampling; OpenUni conditioning → SANA's encoder_hidden_states."""

    # Activation memory of one SANA forward in bf16, measured as peak RSS growth on the CPU at the real widths
    # (linear attention + GLUMBConv: linear in latent cells, no quadratic term): a fixed ~0.1-0.45 GiB (the
    # caption projection of the queries, workspaces) plus ~40-70 KiB per latent cell per batch item; rounded up.
    ACTIVATION_FIXED_BYTES = 512 << 20
    ACTIVATION_BYTES_PER_CELL = 80 << 10

    def __init__(self, model_config: OpenUniModelConfig, transformer, *, model_id: str | None, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.FLOW, device=device)
        self.diffusion_model = SanaDiffusionModel(transformer)
        self.openuni_model_id = model_id

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        cross_attn = kwargs.get("cross_attn", None)
        if cross_attn is not None:
            self._check_conditioning(cross_attn, kwargs)
            # CONDCrossAttn batches entries of different lengths by repeating their tokens to a common length,
            # which leaves SANA's softmax cross-attention unchanged (Conditioning (Concat) works).
            out["c_crossattn"] = comfy.conds.CONDCrossAttn(cross_attn)
        return out

    def _check_conditioning(self, cross_attn: torch.Tensor, cond: dict) -> None:
        if MARKER not in cond:
            raise foreign_conditioning_error(cross_attn)
        width = self.diffusion_model.caption_channels
        if cross_attn.ndim != 3 or cross_attn.shape[-1] != width:
            raise OpenUniError(f"The conditioning has shape {list(cross_attn.shape)}; the OpenUni MODEL needs "
                               f"[batch, 256, {width}] from OpenUni Text Encode.")
        if self.openuni_model_id is not None and cond[MARKER] != self.openuni_model_id:
            raise OpenUniError("This conditioning was encoded by a different OpenUni model than the MODEL sampling "
                               "it; encode the prompt with the same OpenUni Model Loader.")

    def memory_required(self, input_shape, cond_shapes={}):
        cells = input_shape[0] * input_shape[2] * input_shape[3]
        per = comfy.model_management.dtype_size(self.get_dtype()) / 2
        return (self.ACTIVATION_FIXED_BYTES + cells * self.ACTIVATION_BYTES_PER_CELL) * per


def model_patcher(engine, latent_format: OpenUniLatentFormat, *, load_device=None, offload_device=None):
    """OpenUni engine → ComfyUI MODEL: a ModelPatcher around OpenUniSana over the engine's SANA (no weight copy),
    able to load partially. Devices default to ComfyUI's (`get_torch_device()`, `unet_offload_device()`)."""
    mm = comfy.model_management
    load_device = load_device or mm.get_torch_device()
    offload_device = offload_device or mm.unet_offload_device()
    cfg = engine.transformer.config
    config = OpenUniModelConfig(flow_shift=float(engine.scheduler_config.get("flow_shift", 3.0)),
                                latent_format=latent_format, caption_channels=int(cfg.caption_channels),
                                dtype=engine.transformer.dtype)
    base = OpenUniSana(config, engine.transformer, model_id=engine.model_id, device=offload_device)
    patcher = comfy.model_patcher.ModelPatcher(base, load_device=load_device, offload_device=offload_device)
    lowvram.enable_partial_loading(patcher)
    return patcher
