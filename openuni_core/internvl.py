"""InternVL3 from either on-disk format, on transformers' native InternVL classes.

OpenUni was trained on the ORIGINAL OpenGVLab format (custom `InternVLChatModel` code). We never run
that code (`trust_remote_code` stays off): its config is translated to `InternVLConfig` and its keys to
the native names. The `-hf` format is loaded by transformers directly.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config

from . import compat
from .errors import OpenUniError
from .files import expect, list_differences, read_json, weight_differences

IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
REQUIRED_TOKENS = (IM_START, IM_END, IMG_START, IMG_END, IMG_CONTEXT)
IMAGE_SIZE = 448
TOKENS_PER_TILE = 256

# Settings of the original `llm_config` that Qwen2Config understands; the rest is bookkeeping.
_QWEN2_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
    "rope_scaling", "use_sliding_window", "sliding_window", "max_window_layers", "attention_dropout",
    "bos_token_id", "eos_token_id",
)


@dataclass
class InternVLInfo:
    path: Path
    format: str  # "original" or "hf"
    llm_hidden: int
    use_thumbnail: bool
    context: int  # the LLM's max_position_embeddings: prompt, queries (or image tokens) and answer together
    raw_config: dict


def inspect_internvl_folder(path) -> InternVLInfo:
    """Read only the config: which format, how wide the LLM is. Cheap; done before any weights load."""
    path = Path(path)
    expect("mllm", path)
    cfg = read_json(path / "config.json", f"InternVL3 folder {path}")
    if "llm_config" in cfg and "vision_config" in cfg:
        fmt, llm = "original", cfg["llm_config"]
    elif "text_config" in cfg and "vision_config" in cfg and cfg.get("model_type") == "internvl":
        fmt, llm = "hf", cfg["text_config"]
    else:
        raise OpenUniError(
            f"{path} does not look like an InternVL3 folder: its config.json has model_type "
            f"{cfg.get('model_type')!r} and architectures {cfg.get('architectures')}. Expected an "
            "OpenGVLab InternVL3 folder (InternVLChatModel) or its -hf version (InternVLForConditionalGeneration)."
        )
    if fmt == "original" and cfg.get("ps_version", "v2") != "v2":
        raise OpenUniError(f"{path}: ps_version {cfg.get('ps_version')!r} is not supported (InternVL3 uses v2).")
    if not _weight_files(path):
        raise OpenUniError(f"InternVL3 folder {path} has no *.safetensors weights. Re-download the model folder.")
    # The native config falls back to Qwen2's own default where the file gives none; so does this.
    context = int(llm.get("max_position_embeddings") or Qwen2Config().max_position_embeddings)
    return InternVLInfo(path, fmt, int(llm["hidden_size"]), bool(cfg.get("use_thumbnail", True)), context, cfg)


def _weight_files(path: Path) -> list[Path]:
    return sorted(p for p in path.glob("*.safetensors"))


def native_config_from_original(cfg: dict, image_token_id: int) -> InternVLConfig:
    llm = {k: v for k, v in cfg["llm_config"].items() if k in _QWEN2_KEYS and v is not None}
    # InternVL3 keeps a separate lm_head; the native default would tie it to the embeddings.
    text_config = Qwen2Config(**llm, tie_word_embeddings=False)
    vis = cfg["vision_config"]
    image_size = int(vis.get("image_size", cfg.get("force_image_size", IMAGE_SIZE)))
    patch = int(vis.get("patch_size", 14))
    vision_config = InternVLVisionConfig(
        hidden_size=vis["hidden_size"], num_hidden_layers=vis["num_hidden_layers"],
        num_attention_heads=vis["num_attention_heads"], intermediate_size=vis["intermediate_size"],
        attention_bias=bool(vis.get("qkv_bias", True)), use_qk_norm=bool(vis.get("qk_normalization", False)),
        hidden_act=vis.get("hidden_act", "gelu"), layer_norm_eps=float(vis.get("layer_norm_eps", 1e-6)),
        norm_type=vis.get("norm_type", "layer_norm"), image_size=[image_size, image_size],
        patch_size=[patch, patch], num_channels=int(vis.get("num_channels", 3)),
        # The original InternViT has no final LayerNorm; mean-pooling mode drops the native one.
        use_mean_pooling=True,
    )
    return InternVLConfig(
        vision_config=vision_config.to_dict(), text_config=text_config.to_dict(), image_token_id=image_token_id,
        image_seq_length=TOKENS_PER_TILE, downsample_ratio=float(cfg.get("downsample_ratio", 0.5)),
        projector_hidden_act="gelu", vision_feature_layer=int(cfg.get("select_layer", -1)),
        vision_feature_select_strategy="default",
    )


# InternViT names, original ↔ native, as templates: {i} a layer index, {p} weight/bias, {n} q_norm/k_norm.
# One table serves both directions (loading here; writing original-format test/benchmark models).
_VISION_NAMES = [
    ("embeddings.class_embedding", "embeddings.cls_token"),
    ("embeddings.patch_embedding.{p}", "embeddings.patch_embeddings.projection.{p}"),
    ("embeddings.position_embedding", "embeddings.position_embeddings"),
    ("encoder.layers.{i}.attn.proj.{p}", "encoder.layer.{i}.attention.projection_layer.{p}"),
    ("encoder.layers.{i}.attn.{n}.{p}", "encoder.layer.{i}.attention.{n}.{p}"),
    ("encoder.layers.{i}.ls1", "encoder.layer.{i}.lambda_1"),
    ("encoder.layers.{i}.ls2", "encoder.layer.{i}.lambda_2"),
    ("encoder.layers.{i}.norm1.{p}", "encoder.layer.{i}.layernorm_before.{p}"),
    ("encoder.layers.{i}.norm2.{p}", "encoder.layer.{i}.layernorm_after.{p}"),
    ("encoder.layers.{i}.mlp.{f}.{p}", "encoder.layer.{i}.mlp.{f}.{p}"),
    # The fused qkv (original) is three projections natively, split in q, k, v order.
    ("encoder.layers.{i}.attn.qkv.{p}", "encoder.layer.{i}.attention.{q}_proj.{p}"),
]
_SLOTS = {"i": r"\d+", "p": "weight|bias", "n": "q_norm|k_norm", "f": "fc1|fc2", "q": "q|k|v"}
_PROJECTOR = {"0": "layer_norm", "1": "linear_1", "3": "linear_2"}  # mlp1 index → native name


@functools.lru_cache(maxsize=None)  # a dozen templates, matched against every vision key of a model
def _template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for slot, alternatives in _SLOTS.items():
        pattern = pattern.replace(re.escape("{" + slot + "}"), f"(?P<{slot}>{alternatives})")
    return re.compile(pattern + "$")


def _rename_vision(key: str, to_native: bool) -> list[str]:
    for original, native in _VISION_NAMES:
        src, dst = (original, native) if to_native else (native, original)
        m = _template_regex(src).match(key)
        if m:
            slots = m.groupdict()
            targets = [dict(slots, q=q) for q in "qkv"] if "{q}" in dst else [slots]
            return [dst.format(**t) for t in targets]
    return []


def map_original_key(key: str, tensor: torch.Tensor) -> list[tuple[str, str, torch.Tensor]]:
    """One original InternVL key → [(submodule, native key, tensor)]; [] if the key is unknown."""
    if key.startswith("vision_model."):
        names = _rename_vision(key[len("vision_model."):], to_native=True)
        parts = tensor.chunk(3, dim=0) if len(names) == 3 else (tensor,)
        return [("vision_tower", n, t) for n, t in zip(names, parts)]
    m = re.match(r"mlp1\.(\d)\.(weight|bias)$", key)
    if m and m[1] in _PROJECTOR:
        return [("multi_modal_projector", f"{_PROJECTOR[m[1]]}.{m[2]}", tensor)]
    if key.startswith("language_model.model."):
        return [("language_model", key[len("language_model.model."):], tensor)]
    if key == "language_model.lm_head.weight":
        return [("lm_head", "weight", tensor)]
    return []


def original_key(submodule: str, native_key: str) -> str:
    """Native (submodule, key) → the original OpenGVLab key (q/k/v all name the fused qkv)."""
    if submodule == "vision_tower":
        names = _rename_vision(native_key, to_native=False)
        if not names:
            raise KeyError(native_key)
        return "vision_model." + names[0]
    if submodule == "multi_modal_projector":
        layer, param = native_key.split(".")
        return f"mlp1.{next(i for i, n in _PROJECTOR.items() if n == layer)}.{param}"
    if submodule == "language_model":
        return "language_model.model." + native_key
    return "language_model.lm_head." + native_key


def original_state_dict(native: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Native weights per submodule → one state dict under the original OpenGVLab names, the vision
    attention's q, k, v fused back into qkv (the inverse of `map_original_state_dict`; writes test and
    benchmark models in the original format)."""
    out: dict[str, torch.Tensor] = {}
    for sub, sd in native.items():
        for key in sd:
            orig = original_key(sub, key)
            if orig not in out:
                parts = [native[s][k] for s, k, _ in map_original_key(orig, torch.zeros(3))]
                out[orig] = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
    return out


def submodules(model: InternVLForConditionalGeneration) -> dict[str, torch.nn.Module]:
    return {
        "vision_tower": model.model.vision_tower,
        "multi_modal_projector": model.model.multi_modal_projector,
        "language_model": model.model.language_model,
        "lm_head": model.lm_head,
    }


def map_original_state_dict(state: dict[str, torch.Tensor], source: str) -> dict[str, dict[str, torch.Tensor]]:
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in state.items():
        mapped = map_original_key(key, tensor)
        if not mapped:
            unknown.append(key)
        for sub, native_key, t in mapped:
            grouped.setdefault(sub, {})[native_key] = t
    if unknown:
        raise OpenUniError(f"{source}: {len(unknown)} InternVL weights cannot be placed, e.g. {unknown[:3]}. "
                           "Is this an InternVL3 checkpoint in the original OpenGVLab format?")
    return grouped


def load_into(model: InternVLForConditionalGeneration, grouped: dict[str, dict[str, torch.Tensor]], *,
              source: str, strict: bool, assign: bool) -> None:
    subs = submodules(model)
    for name, module in subs.items():
        sd = grouped.get(name, {})
        if not sd and not strict:
            continue
        try:
            result = module.load_state_dict(sd, strict=strict, assign=assign)
        except RuntimeError as e:
            raise OpenUniError(f"{source}: weights do not fit the InternVL3 model's {name}: {str(e)[:600]}") from e
        if not strict and result.unexpected_keys:
            raise OpenUniError(f"{source}: unknown {name} weights {result.unexpected_keys[:3]}.")


def _read_safetensors(files: list[Path], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for k in fh.keys():
                    t = fh.get_tensor(k)
                    out[k] = t if t.dtype == dtype or not t.is_floating_point() else t.to(dtype)
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
            raise OpenUniError(f"Cannot read {f}: {e}. The file is corrupt or incomplete; re-download it.") from e
    return out


def load_tokenizer(path):
    """Load with the class tokenizer_config.json names, never via Auto* (which would ask to run remote code)."""
    path = Path(path)
    tcfg = read_json(path / "tokenizer_config.json", f"InternVL3 tokenizer in {path}")
    if isinstance(tcfg.get("extra_special_tokens"), list) and not compat.TRANSFORMERS_5:
        # transformers 4.x fails on it with "'list' object has no attribute 'keys'" (or asks for protobuf).
        raise OpenUniError(
            f"{path / 'tokenizer_config.json'}: its setting `extra_special_tokens` is a list, as transformers 5 "
            f"writes it, which transformers {transformers.__version__} cannot read. Upgrade transformers "
            "(pip install -U transformers), or in that file rename `extra_special_tokens` to "
            "`additional_special_tokens` (the spelling of the original InternVL3 folders).")
    name = tcfg.get("tokenizer_class") or "Qwen2TokenizerFast"
    base = name[:-4] if name.endswith("Fast") else name
    cls = getattr(transformers, base + "Fast", None) or getattr(transformers, base, None)
    if cls is None:
        raise OpenUniError(f"{path}: tokenizer class {name!r} is not available in transformers {transformers.__version__}.")
    try:
        tok = cls.from_pretrained(str(path))
    except Exception as e:
        raise OpenUniError(f"Cannot load the tokenizer in {path}: {e}") from e
    vocab = tok.get_vocab()
    missing = [t for t in REQUIRED_TOKENS if t not in vocab]
    if missing:
        raise OpenUniError(f"The tokenizer in {path} lacks the special tokens {missing} that InternVL3 chat needs. "
                           "Use the tokenizer files that come with InternVL3.")
    return tok


def load_internvl(path, *, dtype: torch.dtype, attn_implementation: str = "sdpa",
                  state_override: dict[str, torch.Tensor] | None = None, repo: str = "its Hugging Face repo"):
    """Return (model, tokenizer, info). `state_override` holds original-format keys (an OpenUni `lmm.*` group).

    Raises OpenUniError naming the folder, the missing/unexpected/mis-shaped weights and where to download the
    folder again (`repo`) when its weights are not exactly those its config.json describes: no weight is ever
    left randomly initialised."""
    info = inspect_internvl_folder(path)
    tokenizer = load_tokenizer(info.path)
    image_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    if info.format == "hf":
        model = _load_hf(info.path, dtype, attn_implementation, repo)
        model.config.image_token_id = image_token_id
    else:
        from accelerate import init_empty_weights

        config = native_config_from_original(info.raw_config, image_token_id)
        compat.set_attn_implementation(config, attn_implementation)
        # Parameters on the meta device, then the file's tensors assigned in place: no fp32 copy is
        # ever built. Buffers (rotary frequencies) stay real, computed as usual.
        with init_empty_weights(include_buffers=False):
            model = InternVLForConditionalGeneration(config)
        state = _read_safetensors(_weight_files(info.path), dtype)
        grouped = map_original_state_dict(state, str(info.path))
        want = {f"{sub}.{k}": v.shape for sub, m in submodules(model).items() for k, v in m.state_dict().items()}
        have = {f"{sub}.{k}": v.shape for sub, sd in grouped.items() for k, v in sd.items()}
        _refuse_differences(info.path, weight_differences(want, have), repo)
        load_into(model, grouped, source=str(info.path), strict=True, assign=True)
    if state_override:
        grouped = map_original_state_dict(state_override, "checkpoint lmm.* group")
        load_into(model, grouped, source="checkpoint lmm.* group", strict=False, assign=False)
    model.eval().requires_grad_(False)
    return model, tokenizer, info


def _load_hf(path: Path, dtype: torch.dtype, attn_implementation: str, repo: str):
    """transformers' own loader; what it would leave randomly initialised (a warning only) is refused instead."""
    try:
        model, info = InternVLForConditionalGeneration.from_pretrained(
            str(path), attn_implementation=attn_implementation, output_loading_info=True, **compat.dtype_kwargs(dtype))
    except (RuntimeError, ValueError, OSError) as e:  # e.g. a size mismatch, a truncated file
        raise OpenUniError(f"Cannot load the InternVL3 weights in {path}: {str(e).strip().splitlines()[0][:300]}. "
                           f"Re-download the folder from {repo}.") from e
    reshaped = [str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys", [])]
    _refuse_differences(path, list_differences(sorted(info.get("missing_keys", [])),
                                               sorted(info.get("unexpected_keys", [])), reshaped), repo)
    return model


def _refuse_differences(path: Path, problems: str, repo: str) -> None:
    if problems:
        files = ", ".join(f.name for f in _weight_files(path))
        raise OpenUniError(f"{path} ({files}) does not hold the weights its config.json describes: {problems}. The "
                           f"download is incomplete or the files belong to different models; re-download the folder "
                           f"from {repo}.")
