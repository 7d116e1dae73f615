"""Loading an OpenUni set from the user's files: check everything cheap first, then read each weight once.

`inspect_openuni` validates presence, configs, the checkpoint's header and that the parts form one variant
without reading any large weight (hosts call it before dropping a working model); `load_openuni` then
builds every part straight into its target dtype and hands them to `OpenUniModel`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import compat
from .checkpoint import CheckpointInfo, OpenUniCheckpoint, inspect_checkpoint, load_openuni_checkpoint
from .devices import NAMES, part_dtypes, resolve_attention, resolve_device
from .diffusion_parts import check_folder_weights, check_group_fits, load_part, model_shapes
from .errors import OpenUniError
from .files import ModelPaths, check_present, part_repo, sana_scheduler_config, sana_transformer_config, vae_config
from .internvl import inspect_internvl_folder, load_internvl
from .model import OpenUniModel
from .options import MEMORY_POLICIES
from .variants import Variant, identify_variant


@dataclass
class LoadReport:
    variant: str
    mllm_format: str
    checkpoint_groups: list[str]
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.variant}: InternVL3 ({self.mllm_format} format); checkpoint groups applied: "
                f"{', '.join(self.checkpoint_groups)}" + "".join(f"; {n}" for n in self.notes))


@dataclass
class OpenUniFiles:
    """A validated set of model files (what `inspect_openuni` found), before any weight is read."""

    paths: ModelPaths
    variant: Variant
    mllm_info: object
    sana_config: dict
    scheduler_config: dict
    checkpoint_groups: list[str]
    connector: tuple[int, int, int]  # width, MLP size, layers


def inspect_openuni(checkpoint, mllm, sana, vae=None) -> OpenUniFiles:
    """Validate the four parts cheaply — presence, configs, the checkpoint's header, that they form one
    variant — and raise OpenUniError naming any problem. vae None: the SANA folder's vae/."""
    paths = ModelPaths(Path(checkpoint), Path(mllm), Path(sana), Path(vae) if vae else None)
    check_present(paths)
    info = inspect_internvl_folder(paths.mllm)
    sana_cfg = sana_transformer_config(paths.sana)
    sched_cfg = sana_scheduler_config(paths.sana)
    vae_cfg = vae_config(paths.vae_dir)
    ckpt = inspect_checkpoint(paths.checkpoint)
    variant = identify_variant(checkpoint_llm_hidden=ckpt.llm_hidden, mllm_llm_hidden=info.llm_hidden,
                               sana_config=sana_cfg, connector=ckpt.connector, checkpoint_config=ckpt.config,
                               checkpoint_name=paths.checkpoint.name, mllm_name=str(paths.mllm),
                               sana_name=str(paths.sana))
    if ckpt.projector[1] != ckpt.connector[0]:
        raise OpenUniError(f"{paths.checkpoint.name} does not fit together: its projector takes {ckpt.projector[1]} "
                           f"channels (projector.weight {list(ckpt.projector)}) but its connector is "
                           f"{ckpt.connector[0]} wide. The file is damaged or not an OpenUni checkpoint.")
    if int(sana_cfg["caption_channels"]) != ckpt.caption_channels:
        raise OpenUniError(f"{paths.checkpoint.name} projects to {ckpt.caption_channels} channels but {paths.sana} "
                           f"expects caption_channels={sana_cfg['caption_channels']}.")
    compat.check_diffusers({"SanaTransformer2DModel": (sana_cfg, paths.sana / "transformer"),
                            "AutoencoderDC": (vae_cfg, paths.vae_dir)})
    _check_weights(paths, variant, ckpt, sana_cfg, vae_cfg)
    return OpenUniFiles(paths, variant, info, sana_cfg, sched_cfg, ckpt.groups, ckpt.connector)


def _check_weights(paths: ModelPaths, variant: Variant, ckpt: CheckpointInfo, sana_cfg: dict, vae_cfg: dict) -> None:
    """The checkpoint's transformer.*/vae.* groups fit SANA/DC-AE as their configs describe them, and the folders
    hold every weight the checkpoint does not replace (names and shapes only; nothing is read)."""
    from diffusers import AutoencoderDC, SanaTransformer2DModel

    for cls, folder, cfg, group, part in ((SanaTransformer2DModel, paths.sana / "transformer", sana_cfg, "transformer",
                                           "sana"), (AutoencoderDC, paths.vae_dir, vae_cfg, "vae", "vae")):
        want, replaced = model_shapes(cls, cfg), ckpt.shapes[group]
        check_group_fits(want, replaced, f"{paths.checkpoint.name} {group}.*")
        if len(replaced) < len(want):
            check_folder_weights(folder, want, part_repo(part, variant))


def load_openuni(checkpoint, mllm, sana, vae=None, *, dtype: str = "auto", device=None, mllm_device=None,
                 offload: str = "none", attention: str = "auto",
                 log: Callable[[str], None] | None = None) -> OpenUniModel:
    """Load an OpenUni set (README: model files) and return the ready model.

    dtype: options.PRECISIONS (what each part runs in: devices.part_dtypes); device: SANA and DC-AE ("auto" = first
    GPU, else CPU); mllm_device: InternVL3 (default: device); offload: options.MEMORY_POLICIES; attention:
    options.ATTENTION_KERNELS. log receives one-line messages, while loading and later (the model keeps it).
    Raises OpenUniError (or MissingModelFilesError) for anything wrong with the files or settings, before any
    large weight is read.
    """
    model_log = log or (lambda s: warnings.warn(s, stacklevel=2))  # later messages (an fp16 overflow) must be seen
    log = log or (lambda s: None)
    sana_dev = resolve_device(device)
    mllm_dev = resolve_device(mllm_device) if mllm_device not in (None, "", "auto") else sana_dev
    dtypes = part_dtypes(dtype, sana_dev)
    if offload not in MEMORY_POLICIES:
        raise OpenUniError(f"Unknown offload policy {offload!r}; choose one of {', '.join(MEMORY_POLICIES)}.")
    attn = resolve_attention(attention, mllm_dev)

    # 1. Cheap checks (no weights read): presence, configs, checkpoint header, the variant.
    files = inspect_openuni(checkpoint, mllm, sana, vae)
    paths, variant, info = files.paths, files.variant, files.mllm_info
    if variant.custom:
        log(f"[OpenUni] custom OpenUni: {variant.describe(files.connector)}")
    log(f"[OpenUni] {variant.name}: loading InternVL3 ({info.format} format) in {NAMES[dtypes['mllm']]}, SANA in "
        f"{NAMES[dtypes['sana']]}, DC-AE in {NAMES[dtypes['vae']]}")
    ckpt: OpenUniCheckpoint = load_openuni_checkpoint(paths.checkpoint)

    # 2. Weights, each straight into its target dtype.
    from diffusers import AutoencoderDC, SanaTransformer2DModel

    model, tokenizer, _ = load_internvl(paths.mllm, dtype=dtypes["mllm"], attn_implementation=attn,
                                        state_override=ckpt.groups["lmm"] or None, repo=part_repo("mllm", variant))
    bridge = _bridge(ckpt, variant, dtypes["mllm"])
    name = paths.checkpoint.name
    transformer, fine_tuned = load_part(SanaTransformer2DModel, paths.sana / "transformer", ckpt.groups["transformer"],
                                        dtypes["sana"], f"{name} transformer.*", warn_partial=True)
    notes = ["SANA transformer weights replaced by the checkpoint's fine-tuned ones"] if fine_tuned else []
    decoder, _ = load_part(AutoencoderDC, paths.vae_dir, ckpt.groups["vae"], dtypes["vae"], f"{name} vae.*")
    report = LoadReport(variant.name, info.format, ckpt.found(), notes)
    log(f"[OpenUni] {report}")
    return OpenUniModel(variant=variant, mllm=model, tokenizer=tokenizer, use_thumbnail=info.use_thumbnail,
                        bridge=bridge, transformer=transformer, scheduler_config=files.scheduler_config, vae=decoder,
                        devices={"mllm": mllm_dev, "sana": sana_dev, "vae": sana_dev}, offload=offload,
                        model_id=paths.fingerprint(), report=report, log=model_log)


def _bridge(ckpt: OpenUniCheckpoint, variant: Variant, dtype: torch.dtype):
    from .connector import build_query_bridge

    return build_query_bridge(ckpt.meta_queries, ckpt.groups["connector"], ckpt.groups["projector"],
                              heads=variant.connector_heads, dtype=dtype, source=str(ckpt.path))
