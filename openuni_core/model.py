"""`OpenUniModel`: the loaded parts of one OpenUni variant and everything you can do with them.

Loading order follows the rule "check everything cheap first": file presence, configs and checkpoint
shapes are all validated (and the variant identified) before any large weight is read.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import inspect
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import captioning, conditioning, sampling, vae as vae_ops
from .checkpoint import OpenUniCheckpoint, inspect_checkpoint, load_openuni_checkpoint
from .conditioning import QueryConditioning
from .diffusion_parts import load_part
from .errors import OpenUniError
from .files import check_present, sana_scheduler_config, sana_transformer_config, vae_config
from .images import edit_pixel_values, to_pil
from .internvl import IMG_CONTEXT, inspect_internvl_folder, load_internvl
from .streaming import largest_layer_bytes, weights_on
from .variants import Variant, identify_variant

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OFFLOAD = ("none", "mllm", "sequential")
ATTENTION = ("auto", "sdpa", "flash_attention_2", "eager")
CPU = torch.device("cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise OpenUniError(f"Unknown precision {name!r}; choose auto, {', '.join(DTYPES)}.")
    return DTYPES[name]


def resolve_device(name) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise OpenUniError(f"Unknown device {name!r}; use cpu, cuda, cuda:1, ...") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise OpenUniError(f"Device {name} is not available on this machine; use cpu or an existing GPU.")
    return dev


def resolve_attention(name: str, device: torch.device) -> str:
    if name not in ATTENTION:
        raise OpenUniError(f"Unknown attention {name!r}; choose one of {', '.join(ATTENTION)}.")
    if name == "flash_attention_2" or (name == "auto" and device.type == "cuda"):
        try:
            import flash_attn  # noqa: F401

            if device.type == "cuda":
                return "flash_attention_2"
        except ImportError:
            pass
        if name == "flash_attention_2":
            raise OpenUniError("flash_attention_2 needs the flash-attn package and a CUDA GPU; choose sdpa or auto.")
    return "sdpa" if name == "auto" else name


def _fingerprint(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


@dataclass
class LoadReport:
    variant: str
    mllm_format: str
    checkpoint_groups: list[str]
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.variant}: InternVL3 ({self.mllm_format} format); checkpoint groups applied: "
                f"{', '.join(self.checkpoint_groups)}" + "".join(f"; {n}" for n in self.notes))


class OpenUniModel:
    """Holds InternVL3, the query bridge, SANA and DC-AE, places them on devices, and runs them."""

    CACHE_SIZE = 32

    def __init__(self, *, variant: Variant, mllm, tokenizer, use_thumbnail: bool, bridge, transformer,
                 scheduler_config: dict, vae, dtype: torch.dtype, devices: dict[str, torch.device], offload: str,
                 model_id: str, report: LoadReport, compile: bool = False):
        self.variant, self.mllm, self.tokenizer, self.use_thumbnail = variant, mllm, tokenizer, use_thumbnail
        self.bridge, self.transformer, self.scheduler_config, self.vae = bridge, transformer, scheduler_config, vae
        self.dtype, self.devices, self.offload, self.model_id, self.report = dtype, devices, offload, model_id, report
        self.max_prompt_tokens = int(mllm.config.text_config.max_position_embeddings) - bridge.meta_queries.shape[0]
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.llm_forwards = 0  # how many times the LLM actually ran (benchmarks and tests read this)
        self._where: dict[str, torch.device] = {}
        self.compile = compile
        self._compiled = None
        # Host hook: called with (bytes, device) before a part moves onto an accelerator, so the host
        # (ComfyUI's model management) can make room first.
        self.request_memory: Callable[[int, torch.device], None] | None = None
        for part in self._parts:
            self._move(part, CPU if self._offloaded(part) else self.devices[part])

    # ----- placement -------------------------------------------------------------------------------
    @property
    def _parts(self) -> dict[str, list[torch.nn.Module]]:
        return {"mllm": [self.mllm, self.bridge], "sana": [self.transformer], "vae": [self.vae]}

    def _offloaded(self, part: str) -> bool:
        if self.devices[part].type == "cpu":
            return False
        return self.offload == "sequential" or (self.offload == "mllm" and part == "mllm")

    def part_bytes(self, part: str) -> int:
        return sum(map(_param_bytes, self._parts[part]))

    def _move(self, part: str, device: torch.device) -> None:
        if self._where.get(part) == device:
            return
        if device.type != "cpu" and self.request_memory is not None:
            self.request_memory(self.part_bytes(part), device)
        for m in self._parts[part]:
            m.to(device)
        self._where[part] = device

    @contextlib.contextmanager
    def _use(self, part: str, what: str, per_layer: bool = False):
        """Run a block with a part on its compute device; turn out-of-memory into an actionable error and
        leave the model usable.

        An offloaded part (per the policy) keeps its weights in CPU RAM; they are copied to the device for
        the block and dropped after (streaming.py). per_layer: the MLLM gets one layer's weights at a time,
        for its single encoding pass (not for captioning, which runs the LLM once per generated token).
        """
        device, offloaded = self.devices[part], self._offloaded(part)
        out_of_memory = False
        try:
            if offloaded:
                self._move(part, CPU)  # where an offloaded part lives between uses (no-op when there)
                layered = [self.mllm] if per_layer and part == "mllm" else []
                whole = [m for m in self._parts[part] if m not in layered]
                on_host = self.embedding_tables() if layered else []
                need = sum(map(_param_bytes, whole)) + sum(largest_layer_bytes(m, on_host) for m in layered)
                if self.request_memory is not None:
                    self.request_memory(need, device)
                self._make_room(need, device, keep=part)
                placed = weights_on(device, whole=whole, per_layer=layered, on_host=on_host)
            else:
                self._move(part, device)  # no-op when already there
                placed = contextlib.nullcontext()
            with placed:
                yield
        except Exception as e:
            if not _is_oom(e):
                raise
            out_of_memory = True  # raised below, outside this block, so the failed step's tensors can be freed
        if offloaded and device.type == "cuda":
            torch.cuda.empty_cache()  # the dropped weight copies go back to the driver, for other models and programs
        if out_of_memory:
            self._release_memory()  # the failed step's tensors can sit in reference cycles (traceback frames)
            raise OpenUniError(
                f"Out of memory while {what} on {device}. Try a lower-memory policy (offload the MLLM, "
                "or sequential offload), a smaller width/height or batch size, or bf16/fp16 precision.")

    def embedding_tables(self) -> list[torch.nn.Module]:
        """The LLM's token embedding and output tables: the biggest layers, and an encode needs only a few rows
        of the first (looked up where the table is) and none of the second."""
        return [m for m in (self.mllm.get_input_embeddings(), self.mllm.get_output_embeddings()) if m is not None]

    def _make_room(self, need: int, device: torch.device, keep: str) -> None:
        """Park our own resident parts on the CPU while `need` bytes (plus a margin for activations) do not
        fit beside them; each comes back on its next use. E.g. captioning under the MLLM-offload policy on
        an 8 GB GPU, where InternVL3-2B whole does not fit next to SANA and DC-AE."""
        if device.type != "cuda":
            return
        free = self._free_bytes(device)
        for other in ("vae", "sana", "mllm"):
            if free >= need * 1.1 + (256 << 20):
                break
            if other != keep and self._where.get(other) == device:
                self._move(other, CPU)  # its blocks return to torch's cache, where the new weights can use them
                free += self.part_bytes(other)

    @staticmethod
    def _free_bytes(device: torch.device) -> int:
        """Free device memory, counting what torch has cached but not handed out."""
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)

    def _release_memory(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def offload_all(self) -> None:
        """Move every part to the CPU (a host's "free memory" request); each comes back on its next use
        and then follows the offload policy again."""
        for part in self._parts:
            self._move(part, CPU)
        self._release_memory()

    def placement(self) -> dict[str, str]:
        """Where each part (mllm, sana, vae) is now."""
        return {part: str(dev) for part, dev in self._where.items()}

    def on_accelerator(self) -> bool:
        return any(dev.type != "cpu" for dev in self._where.values())

    # ----- conditioning ----------------------------------------------------------------------------
    def _encode_cached(self, keys: list[str], compute: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            with self._use("mllm", "encoding the prompt", per_layer=True):
                fresh = compute(todo)
            self.llm_forwards += 1
            for j, i in enumerate(todo):
                self._cache[keys[i]] = fresh[j:j + 1].cpu()
                while len(self._cache) > self.CACHE_SIZE:
                    self._cache.popitem(last=False)
        for k in keys:
            self._cache.move_to_end(k)
        return torch.cat([self._cache[k] for k in keys])

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        def compute(idx: list[int]) -> torch.Tensor:
            ids = conditioning.tokenize(self.tokenizer, [texts[i] for i in idx], self.max_prompt_tokens)
            embeds = conditioning.text_token_embeds(self.mllm, ids, self.devices["mllm"])
            return conditioning.run_queries(self.mllm, self.bridge.meta_queries, self.bridge, embeds)

        return self._encode_cached([f"text:{t}" for t in texts], compute)

    def _text(self, text, what: str = "prompt") -> str:
        return conditioning.check_user_text(self.tokenizer, text, what)

    def _prompt_list(self, prompts) -> list[str]:
        if isinstance(prompts, str):
            return [prompts]
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise OpenUniError(f"A prompt must be text (or a non-empty list of texts), got {type(prompts).__name__}.")
        return list(prompts)

    def _generation_texts(self, prompts) -> list[str]:
        return [conditioning.generation_text(self._text(p)) for p in self._prompt_list(prompts)]

    def _negative_text(self, negative: str | None) -> str:
        return conditioning.negative_text(self._text(negative or "", "negative prompt"))

    def encode_prompt(self, prompts: str | list[str]) -> QueryConditioning:
        """Prompt(s) → positive query conditioning [B, 256, caption_channels] (cached per text)."""
        texts = self._generation_texts(prompts)
        return QueryConditioning(self._encode_texts(texts), self.model_id, texts)

    def encode_negative(self, negative: str | None = None) -> QueryConditioning:
        """Negative/CFG conditioning; the default ("Generate an image.") is computed once per model."""
        text = self._negative_text(negative)
        return QueryConditioning(self._encode_texts([text]), self.model_id, [text])

    def encode_pair(self, prompts: str | list[str], negative: str | None = None
                    ) -> tuple[QueryConditioning, QueryConditioning]:
        """Positive and negative together: whatever is not cached yet goes through the LLM in ONE padded
        batch, as the reference does with [prompt, CFG prompt]."""
        texts, neg_text = self._generation_texts(prompts), self._negative_text(negative)
        embeds = self._encode_texts(texts + [neg_text])
        return (QueryConditioning(embeds[:-1], self.model_id, texts),
                QueryConditioning(embeds[-1:], self.model_id, [neg_text]))

    def encode_edit(self, images, instruction: str) -> QueryConditioning:
        """Image(s) + instruction → conditioning (EXPERIMENTAL upstream; exact to the reference math)."""
        images = _as_image_list(images)
        instruction = self._text(instruction, "instruction")
        # Refuse an over-long instruction before any image work.
        ids = conditioning.tokenize(self.tokenizer, [conditioning.edit_text(instruction)], self.max_prompt_tokens)
        pils = [to_pil(im) for im in images]
        keys = [f"edit:{hashlib.sha256(p.tobytes()).hexdigest()}:{p.size}:{instruction}" for p in pils]
        context_id = self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT)

        def compute(idx: list[int]) -> torch.Tensor:
            dev = self.devices["mllm"]
            pixels = torch.cat([edit_pixel_values(pils[i]) for i in idx]).to(dev, self.mllm.dtype)
            tokens = conditioning.image_tokens(self.mllm, pixels)
            embeds = conditioning.text_token_embeds(self.mllm, ids * len(idx), dev)
            embeds = [conditioning.splice_image_tokens(e, ids[0].to(dev), tokens[j], context_id)
                      for j, e in enumerate(embeds)]
            return conditioning.run_queries(self.mllm, self.bridge.meta_queries, self.bridge, embeds)

        return QueryConditioning(self._encode_cached(keys, compute), self.model_id, [instruction] * len(pils))

    # ----- sampling / VAE --------------------------------------------------------------------------
    def check_conditioning(self, cond: QueryConditioning | None, what: str) -> None:
        if cond is None:
            return
        if cond.model_id != self.model_id:
            raise OpenUniError(f"The {what} conditioning was made by a different OpenUni model than the one sampling; "
                               "encode the prompt with the same loaded model.")
        width = self.transformer.config.caption_channels
        if cond.embeds.ndim != 3 or cond.embeds.shape[-1] != width:
            raise OpenUniError(f"The {what} conditioning has shape {list(cond.embeds.shape)}; this model needs "
                               f"[batch, 256, {width}].")

    def sample(self, positive: QueryConditioning, negative: QueryConditioning | None = None, *, width: int | None = None,
               height: int | None = None, steps: int = 20, cfg: float = 4.5, seed: int = 42, sampler: str = "dpmpp",
               batch_size: int = 1, init_latents: torch.Tensor | None = None, strength: float = 1.0,
               progress=None, interrupt=None) -> torch.Tensor:
        width = self.variant.pixels if width is None else width
        height = self.variant.pixels if height is None else height
        sampling.validate(width=width, height=height, steps=steps, cfg=cfg, sampler=sampler, batch_size=batch_size,
                          strength=strength)
        self.check_conditioning(positive, "positive")
        if cfg != 1.0 and negative is None:
            negative = self.encode_negative()
        self.check_conditioning(negative, "negative")
        if init_latents is not None:
            sampling.check_latents(init_latents, what="input latent")
        with self._use("sana", f"sampling {batch_size}×{width}×{height}"):
            latents = sampling.sample(
                self._sampling_transformer(), self.scheduler_config, positive.embeds, negative.embeds if negative else None,
                width=width, height=height, steps=steps, cfg=cfg, seed=seed, sampler=sampler, batch_size=batch_size,
                init_latents=init_latents, strength=strength, progress=progress, interrupt=interrupt)
            return latents.cpu()

    def _sampling_transformer(self):
        if not self.compile:
            return self.transformer
        if self._compiled is None:
            self._compiled = torch.compile(self.transformer)
        return self._compiled

    def decode(self, latents: torch.Tensor, tiled: bool | None = None) -> torch.Tensor:
        with self._use("vae", "decoding latents"):
            return vae_ops.decode(self.vae, latents, tiled=tiled)

    def encode_images(self, images: torch.Tensor, tiled: bool | None = None) -> torch.Tensor:
        with self._use("vae", "encoding images"):
            return vae_ops.encode(self.vae, images, tiled=tiled)

    def generate(self, prompt: str, negative: str | None = None, **kwargs) -> torch.Tensor:
        """Text → images [B,H,W,3] in 0..1: encode, sample, decode."""
        if kwargs.get("cfg", 4.5) != 1.0:
            pos, neg = self.encode_pair(prompt, negative)
        else:
            pos, neg = self.encode_prompt(prompt), None
        return self.decode(self.sample(pos, neg, **kwargs))

    # ----- understanding ---------------------------------------------------------------------------
    def caption(self, image, question: str = captioning.DEFAULT_QUESTION, **kwargs) -> str:
        with self._use("mllm", "captioning"):
            return captioning.caption(self.mllm, self.tokenizer, image, question=question,
                                      use_thumbnail=self.use_thumbnail, **kwargs)


_OOM_TYPES = tuple({getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError})


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, _OOM_TYPES):
        return True
    text = str(e) if isinstance(e, RuntimeError) else ""
    return "out of memory" in text.lower() or "can't allocate memory" in text.lower()


def _as_image_list(images) -> list:
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    return list(images) if isinstance(images, (list, tuple)) else [images]


@dataclass
class OpenUniFiles:
    """A validated set of model files (what `inspect_openuni` found), before any weight is read."""

    checkpoint: Path
    mllm: Path
    sana: Path
    vae: Path
    variant: Variant
    mllm_info: object
    sana_config: dict
    scheduler_config: dict
    checkpoint_groups: list[str]


def inspect_openuni(checkpoint, mllm, sana, vae=None) -> OpenUniFiles:
    """Validate the four parts cheaply — presence, configs, the checkpoint's header, that they form one
    variant — and raise OpenUniError naming any problem. Hosts call this before dropping a working model."""
    checkpoint, mllm, sana = Path(checkpoint), Path(mllm), Path(sana)
    vae = Path(vae) if vae else sana / "vae"
    check_present(checkpoint, mllm, sana, vae)
    info = inspect_internvl_folder(mllm)
    sana_cfg = sana_transformer_config(sana)
    sched_cfg = sana_scheduler_config(sana)
    vae_config(vae)
    ckpt = inspect_checkpoint(checkpoint)
    variant = identify_variant(checkpoint_llm_hidden=ckpt.llm_hidden, mllm_llm_hidden=info.llm_hidden,
                               sana_config=sana_cfg, checkpoint_name=checkpoint.name, mllm_name=str(mllm),
                               sana_name=str(sana))
    if int(sana_cfg["caption_channels"]) != ckpt.caption_channels:
        raise OpenUniError(f"{checkpoint.name} projects to {ckpt.caption_channels} channels but {sana} expects "
                           f"caption_channels={sana_cfg['caption_channels']}.")
    _check_diffusers_knows(sana_cfg, sana)
    return OpenUniFiles(checkpoint, mllm, sana, vae, variant, info, sana_cfg, sched_cfg, ckpt.groups)


def load_openuni(checkpoint, mllm, sana, vae=None, *, dtype: str = "auto", device=None, mllm_device=None,
                 offload: str = "none", attention: str = "auto", compile: bool = False,
                 log: Callable[[str], None] | None = None) -> OpenUniModel:
    """Load an OpenUni variant from the user's files (see README for the layout).

    compile: run the SANA transformer through torch.compile (first sampling call per size pays the
    compilation; see BENCHMARKS.md for what it buys on each device).
    """
    log = log or (lambda s: None)
    checkpoint, mllm, sana = Path(checkpoint), Path(mllm), Path(sana)
    sana_dev = resolve_device(device)
    mllm_dev = resolve_device(mllm_device) if mllm_device not in (None, "", "auto") else sana_dev
    torch_dtype = resolve_dtype(dtype, sana_dev)
    if offload not in OFFLOAD:
        raise OpenUniError(f"Unknown offload policy {offload!r}; choose one of {', '.join(OFFLOAD)}.")
    attn = resolve_attention(attention, mllm_dev)

    # 1. Cheap checks (no weights read): presence, configs, checkpoint header, the variant.
    files = inspect_openuni(checkpoint, mllm, sana, vae)
    variant, info, vae = files.variant, files.mllm_info, files.vae
    log(f"[OpenUni] {variant.name}: loading InternVL3 ({info.format} format), SANA and DC-AE in {torch_dtype}")
    ckpt: OpenUniCheckpoint = load_openuni_checkpoint(checkpoint)

    # 2. Weights, each straight into its target dtype.
    from diffusers import AutoencoderDC, SanaTransformer2DModel

    model, tokenizer, _ = load_internvl(mllm, dtype=torch_dtype, attn_implementation=attn,
                                        state_override=ckpt.groups["lmm"] or None)
    bridge = _bridge(ckpt, variant, torch_dtype)
    transformer, fine_tuned = load_part(SanaTransformer2DModel, sana / "transformer", ckpt.groups["transformer"],
                                        torch_dtype, f"{checkpoint.name} transformer.*", warn_partial=True)
    notes = ["SANA transformer weights replaced by the checkpoint's fine-tuned ones"] if fine_tuned else []
    decoder, _ = load_part(AutoencoderDC, vae, ckpt.groups["vae"], torch_dtype, f"{checkpoint.name} vae.*")
    report = LoadReport(variant.name, info.format, ckpt.found(), notes)
    log(f"[OpenUni] {report}")
    model_id = _fingerprint(checkpoint, mllm / "config.json", sana / "transformer" / "config.json")
    return OpenUniModel(variant=variant, mllm=model, tokenizer=tokenizer, use_thumbnail=info.use_thumbnail,
                        bridge=bridge, transformer=transformer, scheduler_config=files.scheduler_config, vae=decoder,
                        dtype=torch_dtype, devices={"mllm": mllm_dev, "sana": sana_dev, "vae": sana_dev},
                        offload=offload, model_id=model_id, report=report, compile=compile)


def _check_diffusers_knows(sana_cfg: dict, sana: Path) -> None:
    """SANA 1.5 settings (e.g. qk_norm) arrived after diffusers 0.32; say so instead of failing mid-load."""
    import diffusers

    supported = set(inspect.signature(diffusers.SanaTransformer2DModel.__init__).parameters)
    neutral = {"qk_norm": None, "timestep_scale": 1.0, "guidance_embeds": False}  # values that change nothing
    unsupported = [k for k, v in neutral.items() if sana_cfg.get(k, v) != v and k not in supported]
    if unsupported:
        raise OpenUniError(f"{sana} uses {unsupported}, which diffusers {diffusers.__version__} does not know; "
                           "upgrade diffusers (pip install -U diffusers) for this SANA model.")


def _bridge(ckpt: OpenUniCheckpoint, variant: Variant, dtype: torch.dtype):
    from .connector import build_query_bridge

    return build_query_bridge(ckpt.meta_queries, ckpt.groups["connector"], ckpt.groups["projector"],
                              heads=variant.connector_heads, dtype=dtype, source=str(ckpt.path))
