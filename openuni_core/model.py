"""`OpenUniModel`: the loaded parts of one OpenUni set and what you can do with them.

A thin facade in the manner of diffusers' pipelines: components are declared (InternVL3, the query bridge,
SANA, DC-AE, the scheduler config), `check_inputs` checks every argument once at the entry, and each method
reads as the steps it takes. Prompt encoding and its cache live in prompt_encoder.py, answers about images and
chat in answers.py, device placement in placement.py (a host such as ComfyUI may replace `placement` with its
own).
"""

from __future__ import annotations

from typing import Callable

import torch

from . import sampling, vae as vae_ops
from .answers import Answerer
from .conditioning import QueryConditioning
from .errors import OpenUniError
from .options import DEFAULT_CFG, DEFAULT_QUESTION, DEFAULT_SAMPLER, DEFAULT_SEED, DEFAULT_STEPS
from .placement import Placement
from .precision import recovering
from .prompt_encoder import PromptEncoder
from .variants import Variant


class OpenUniModel:
    """InternVL3 (mllm + tokenizer), the query bridge, SANA (transformer + scheduler_config) and DC-AE (vae).

    devices: part ("mllm", "sana", "vae") → compute device; offload: options.MEMORY_POLICIES; model_id: the
    identity of the files (conditioning is only valid for the model that made it); log: receives one-line
    messages (e.g. that an fp16 part overflowed and now runs in fp32, see precision.py).
    """

    def __init__(self, *, variant: Variant, mllm, tokenizer, use_thumbnail: bool, bridge, transformer,
                 scheduler_config: dict, vae, devices: dict[str, torch.device], offload: str, model_id: str, report,
                 log: Callable[[str], None] = print):
        self.variant, self.mllm, self.tokenizer, self.use_thumbnail = variant, mllm, tokenizer, use_thumbnail
        self.bridge, self.transformer, self.scheduler_config, self.vae = bridge, transformer, scheduler_config, vae
        self.model_id, self.report, self.log = model_id, report, log
        # What sample() calls; a host may put a compiled or patched transformer here.
        self.denoiser = transformer
        self.placement = Placement({"mllm": [mllm, bridge], "sana": [transformer], "vae": [vae]}, devices, offload,
                                   streamed=mllm, on_host=self.embedding_tables)
        self.prompts = PromptEncoder(mllm, tokenizer, bridge, self.placement, model_id, log=lambda s: self.log(s))
        self.answerer = Answerer(mllm, tokenizer, use_thumbnail, self.placement, log=lambda s: self.log(s))
        self.answers = self.answerer.cache  # greedy answers, see chat.AnswerCache

    @property
    def placement(self):
        """Where each part computes (placement.py); a host may set its own, which then serves every part's user."""
        return self._placement

    @placement.setter
    def placement(self, placement) -> None:
        self._placement = placement
        for user in (getattr(self, "prompts", None), getattr(self, "answerer", None)):
            if user is not None:
                user.placement = placement

    @property
    def dtype(self) -> torch.dtype:
        """What SANA computes in now (precision.py widens an fp16 part that overflowed); per part: placement.dtype."""
        return self.placement.dtype("sana")

    def embedding_tables(self) -> list[torch.nn.Module]:
        """The LLM's token embedding and output tables: its biggest layers, and an encode needs only a few rows of
        the first (looked up where the table is) and none of the second."""
        return [m for m in (self.mllm.get_input_embeddings(), self.mllm.get_output_embeddings()) if m is not None]

    # ----- conditioning ----------------------------------------------------------------------------------------
    def encode_prompt(self, prompts: str | list[str]) -> QueryConditioning:
        return self.prompts.encode_prompt(prompts)

    def encode_negative(self, negative: str | None = None) -> QueryConditioning:
        return self.prompts.encode_negative(negative)

    def encode_pair(self, prompts: str | list[str], negative: str | None = None
                    ) -> tuple[QueryConditioning, QueryConditioning]:
        return self.prompts.encode_pair(prompts, negative)

    def encode_edit(self, images, instruction: str, what: str = "instruction") -> QueryConditioning:
        return self.prompts.encode_edit(images, instruction, what)

    # ----- generation ------------------------------------------------------------------------------------------
    def check_inputs(self, positive: QueryConditioning, negative: QueryConditioning | None, *, width: int,
                     height: int, steps: int, cfg: float, sampler: str, batch_size: int,
                     init_latents: torch.Tensor | None, strength: float,
                     noise_mask: torch.Tensor | None = None, seed: int = DEFAULT_SEED) -> None:
        """Every argument of `sample`, checked once before any work; raises OpenUniError naming the fix."""
        if init_latents is not None:
            sampling.check_latents(init_latents, what="latent input")
        sampling.check_settings(width=width, height=height, steps=steps, cfg=cfg, sampler=sampler,
                                batch_size=batch_size, strength=strength, seed=seed)
        for cond, what in ((positive, "positive"), (negative, "negative")):
            if cond is not None:
                cond.check_for(self.model_id, self.transformer.config.caption_channels, what)
        prompts = len(positive)
        if negative is not None and cfg != 1.0 and len(negative) not in (1, prompts):
            raise OpenUniError(f"Negative conditioning has {len(negative)} rows for {prompts} prompts; give one "
                               "negative, or one per prompt.")
        sampling.check_start(init_latents, noise_mask, width=width, height=height, batch=prompts * batch_size)

    def sample(self, positive: QueryConditioning, negative: QueryConditioning | None = None, *, width: int | None = None,
               height: int | None = None, steps: int = DEFAULT_STEPS, cfg: float = DEFAULT_CFG,
               seed: int = DEFAULT_SEED, sampler: str = DEFAULT_SAMPLER, batch_size: int = 1,
               init_latents: torch.Tensor | None = None, strength: float = 1.0,
               noise_mask: torch.Tensor | None = None, progress=None, interrupt=None, preview=None) -> torch.Tensor:
        """Conditioning → latents [len(positive)·batch_size, 32, height/32, width/32] float32 on the CPU, in DC-AE's
        own (unscaled) space, like init_latents.

        width/height default to the variant's size. negative None with cfg ≠ 1 uses the default negative.
        init_latents + strength: image-to-image; noise_mask (with init_latents): inpainting, 1 = repaint, 0 = keep
        (see sampling.sample). progress(i, n), interrupt(), preview(i, n, x0 latents): host hooks.
        """
        width = self.variant.pixels if width is None else width
        height = self.variant.pixels if height is None else height
        # 1. Check every input, once.
        self.check_inputs(positive, negative, width=width, height=height, steps=steps, cfg=cfg, sampler=sampler,
                          batch_size=batch_size, init_latents=init_latents, strength=strength, noise_mask=noise_mask,
                          seed=seed)
        # 2. The default negative, when guidance needs one.
        if cfg != 1.0 and negative is None:
            negative = self.encode_negative()
        # 3. Denoise on SANA's device (again in a wider dtype if SANA's fp16 overflows, see precision.py).
        def denoise() -> torch.Tensor:
            with self.placement.use("sana", f"sampling {batch_size}×{width}×{height}"):
                return sampling.sample(
                    self.denoiser, self.scheduler_config, positive.embeds, negative.embeds if negative else None,
                    width=width, height=height, steps=steps, cfg=cfg, seed=seed, sampler=sampler,
                    batch_size=batch_size, init_latents=init_latents,
                    strength=strength if init_latents is not None else 1.0, noise_mask=noise_mask,
                    scaling_factor=float(self.vae.config.scaling_factor), progress=progress,
                    interrupt=interrupt, preview=preview).cpu()

        return recovering(self.placement, "sana", denoise, self.log)

    def decode(self, latents: torch.Tensor, tiled: bool | None = None) -> torch.Tensor:
        """Latents [B,32,h,w] → images [B,32h,32w,3] float32 in 0..1 on the CPU (see vae.decode). inf/NaN from DC-AE
        raise OpenUniError (precision.py), never a black image."""
        def run() -> torch.Tensor:
            with self.placement.use("vae", "decoding latents"):
                return vae_ops.decode(self.vae, latents, tiled=tiled)

        return recovering(self.placement, "vae", run, self.log)

    def encode_images(self, images: torch.Tensor, tiled: bool | None = None) -> torch.Tensor:
        """Images [B,H,W,C] in 0..1 (H, W multiples of 32) → latents [B,32,H/32,W/32] float32 on the CPU."""
        def run() -> torch.Tensor:
            with self.placement.use("vae", "encoding images"):
                return vae_ops.encode(self.vae, images, tiled=tiled)

        return recovering(self.placement, "vae", run, self.log)

    def generate(self, prompt: str, negative: str | None = None, *, cfg: float = DEFAULT_CFG, **kwargs) -> torch.Tensor:
        """Text → images [B,H,W,3] in 0..1: encode, sample, decode (kwargs: those of `sample`)."""
        if cfg != 1.0:
            positive, negative_cond = self.encode_pair(prompt, negative)
        else:
            positive, negative_cond = self.encode_prompt(prompt), None
        return self.decode(self.sample(positive, negative_cond, cfg=cfg, **kwargs))

    # ----- understanding (answers.py) ----------------------------------------------------------------------------
    def caption(self, image, question: str = DEFAULT_QUESTION, **kwargs) -> str:
        """One question about one image → its answer (Answerer.caption)."""
        return self.answerer.caption(image, question, **kwargs)

    def captions(self, images, question: str = DEFAULT_QUESTION, **kwargs) -> list[str]:
        """Images × a preset's questions → answers image by image (Answerer.captions)."""
        return self.answerer.captions(images, question, **kwargs)

    def chat(self, message: str, images=None, **kwargs) -> list[str]:
        """A message, optionally about images → one answer per image, or one (Answerer.chat)."""
        return self.answerer.chat(message, images, **kwargs)

    def enhance_prompt(self, prompt: str, images=None, **kwargs) -> list[str]:
        """A short idea → detailed generation prompts, one per reference image (Answerer.enhance_prompt)."""
        return self.answerer.enhance_prompt(prompt, images, **kwargs)
