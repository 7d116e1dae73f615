"""Tiny random OpenUni models written to disk in every real on-disk format.

Tests and the offline demo load these through exactly the code paths real downloads take:
an ORIGINAL-format InternVL3 folder, its `-hf` twin (same weights), a SANA diffusers folder
(transformer/ + scheduler/), a DC-AE folder and OpenUni checkpoints (`.pth` and `.safetensors`)
that include a `transformer.*` group replacing the SANA weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoint import CONFIG_KEY
from .internvl import IM_END, IM_START, IMG_CONTEXT, IMG_END, IMG_START, load_tokenizer, original_state_dict, submodules
from .variants import NUM_QUERIES, VARIANTS

SPECIAL_TOKENS = ["<|endoftext|>", IM_START, IM_END, IMG_START, IMG_END, IMG_CONTEXT,
                  "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]
_CORPUS = (
    "Generate an image: a red fox in the snow. Generate an image. Keep the image as it is. "
    "Describe this image in detail. A photo of a cat sitting on a table, with a blue sky and green trees. "
    "user assistant system What is in the picture? The image shows a small house near a lake at sunset.\n"
)


@dataclass
class TinyModels:
    root: Path
    mllm_original: Path
    mllm_hf: Path
    sana: Path
    vae: Path
    checkpoint: Path  # .pth
    checkpoint_safetensors: Path
    variant: str


def tiny_dims(variant) -> dict:
    """The widths of a tiny set shaped like `variant` (a Variant): LLM, SANA and connector."""
    return dict(llm_hidden=variant.llm_hidden, llm_heads=4, sana_hidden=variant.sana_hidden, sana_heads=4,
                sana_layers=variant.sana_layers, sample_size=variant.sample_size, caption_channels=2304,
                connector_layers=6, connector_heads=variant.connector_heads)


def write_tokenizer(folder: Path, *, with_tokenizer_json: bool = False) -> int:
    """A small byte-level BPE tokenizer in Qwen2's file layout; returns its size.

    Like the original InternVL3 folders: vocab.json + merges.txt + a tokenizer_config.json whose
    added_tokens_decoder holds the special tokens after the base vocabulary (no tokenizer.json).
    `with_tokenizer_json` also writes the fast tokenizer file, as the -hf folders have.
    """
    from tokenizers import ByteLevelBPETokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([_CORPUS] * 4, vocab_size=400, min_frequency=1, show_progress=False)
    bpe.save_model(str(folder))
    base = len(json.loads((folder / "vocab.json").read_text(encoding="utf-8")))
    added = {str(base + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True} for i, t in enumerate(SPECIAL_TOKENS)}
    config = {"tokenizer_class": "Qwen2Tokenizer", "model_max_length": 8192, "bos_token": None, "unk_token": None,
              "eos_token": IM_END, "pad_token": "<|endoftext|>", "errors": "replace",
              "clean_up_tokenization_spaces": False, "split_special_tokens": False,
              "additional_special_tokens": SPECIAL_TOKENS[1:], "added_tokens_decoder": added}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tok = load_tokenizer(folder)
    if with_tokenizer_json:
        tok.save_pretrained(str(folder))
    return len(tok)


def _native_internvl(vocab: int, dims: dict, image_token_id: int, seed: int):
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config

    torch.manual_seed(seed)
    vision = InternVLVisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                  attention_bias=True, image_size=[448, 448], patch_size=[14, 14],
                                  use_mean_pooling=True, layer_norm_eps=1e-6)
    text = Qwen2Config(vocab_size=vocab, hidden_size=dims["llm_hidden"], intermediate_size=2 * dims["llm_hidden"],
                       num_hidden_layers=2, num_attention_heads=dims["llm_heads"], num_key_value_heads=2,
                       max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=1000000.0,
                       tie_word_embeddings=False, bos_token_id=None, eos_token_id=None)
    # Untied, as InternVL3's lm_head is (transformers 5 would tie it through the top-level default).
    config = InternVLConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=image_token_id,
                            downsample_ratio=0.5, vision_feature_layer=-1, vision_feature_select_strategy="default",
                            tie_word_embeddings=False)
    model = InternVLForConditionalGeneration(config).eval()
    with torch.no_grad():  # the defaults initialise LayerScale/norms to constants; make everything matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model, vision, text


def _original_state_dict(model) -> dict[str, torch.Tensor]:
    """The native weights under their original OpenGVLab names (q, k, v fused back into qkv)."""
    native = {sub: module.state_dict() for sub, module in submodules(model).items()}
    return {k: v.contiguous().clone() for k, v in original_state_dict(native).items()}


def write_internvl(root: Path, dims: dict, seed: int) -> tuple[Path, Path]:
    orig_dir, hf_dir = root / "InternVL3-tiny", root / "InternVL3-tiny-hf"
    vocab = write_tokenizer(orig_dir)
    write_tokenizer(hf_dir, with_tokenizer_json=True)
    image_token_id = load_tokenizer(orig_dir).convert_tokens_to_ids(IMG_CONTEXT)
    model, vision, text = _native_internvl(vocab, dims, image_token_id, seed)

    # Original OpenGVLab layout: custom-code config + original key names.
    llm_cfg = {k: v for k, v in text.to_dict().items() if k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
        "attention_dropout", "tie_word_embeddings")}
    llm_cfg.setdefault("rope_theta", 1000000.0)
    llm_cfg.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2", torch_dtype="bfloat16",
                   use_sliding_window=False, rope_scaling=None, bos_token_id=None, eos_token_id=None)
    config = {
        "architectures": ["InternVLChatModel"],
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                     "AutoModel": "modeling_internvl_chat.InternVLChatModel"},
        "model_type": "internvl_chat", "template": "internvl2_5", "downsample_ratio": 0.5,
        "dynamic_image_size": True, "force_image_size": 448, "max_dynamic_patch": 12, "min_dynamic_patch": 1,
        "ps_version": "v2", "select_layer": -1, "use_thumbnail": True, "torch_dtype": "bfloat16",
        "llm_config": llm_cfg,
        "vision_config": {
            "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": vision.hidden_size,
            "num_hidden_layers": vision.num_hidden_layers, "num_attention_heads": vision.num_attention_heads,
            "intermediate_size": vision.intermediate_size, "image_size": 448, "patch_size": 14, "num_channels": 3,
            "qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm", "layer_norm_eps": 1e-6,
            "hidden_act": "gelu", "use_flash_attn": True,
        },
    }
    (orig_dir / "config.json").write_text(json.dumps(config, indent=2))
    save_file(_original_state_dict(model), str(orig_dir / "model.safetensors"), metadata={"format": "pt"})

    # -hf layout: what transformers' own save_pretrained writes, in the spelling every supported version reads.
    model.save_pretrained(str(hf_dir), safe_serialization=True)
    write_four_x_spelling(hf_dir)
    return orig_dir, hf_dir


def write_four_x_spelling(hf_dir: Path) -> None:
    """Rewrite the settings transformers 5 spells differently into the spelling of transformers 4.x, which the
    real InternVL3-hf folders use and which 5.x reads too, so one set of files serves the whole supported range:
    the tokenizer's special-token list (5.x: `extra_special_tokens`, which 4.x cannot read) and the LLM's
    `rope_theta` (5.x nests it in `rope_parameters`, which 4.x ignores, silently falling back to 10000)."""
    tok_path, cfg_path = hf_dir / "tokenizer_config.json", hf_dir / "config.json"
    tok = json.loads(tok_path.read_text(encoding="utf-8"))
    if isinstance(tok.get("extra_special_tokens"), list):
        tok["additional_special_tokens"] = tok.pop("extra_special_tokens")
    tok_path.write_text(json.dumps(tok, indent=2), encoding="utf-8")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    text = cfg["text_config"]
    rope = text.pop("rope_parameters", None) or {}
    text.setdefault("rope_theta", rope.get("rope_theta", 1000000.0))
    text.setdefault("rope_scaling", None)
    cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")


def _sana_config(dims: dict) -> dict:
    heads = dims["sana_heads"]
    return dict(in_channels=32, out_channels=32, num_attention_heads=heads, attention_head_dim=dims["sana_hidden"] // heads,
                num_layers=dims["sana_layers"], num_cross_attention_heads=heads,
                cross_attention_head_dim=dims["sana_hidden"] // heads, cross_attention_dim=dims["sana_hidden"],
                caption_channels=dims["caption_channels"], mlp_ratio=2.5, sample_size=dims["sample_size"], patch_size=1)


SCHEDULER_CONFIG = {
    "_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++", "beta_end": 0.02,
    "beta_schedule": "linear", "beta_start": 0.0001, "dynamic_thresholding_ratio": 0.995, "euler_at_final": False,
    "final_sigmas_type": "zero", "flow_shift": 3.0, "lower_order_final": True, "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction", "sample_max_value": 1.0, "solver_order": 2, "solver_type": "midpoint",
    "steps_offset": 0, "thresholding": False, "timestep_spacing": "linspace", "trained_betas": None,
    "use_flow_sigmas": True, "use_karras_sigmas": False, "use_lu_lambdas": False, "variance_type": None,
}


def write_sana(root: Path, dims: dict, seed: int) -> tuple[Path, object]:
    from diffusers import SanaTransformer2DModel

    torch.manual_seed(seed)
    sana = root / "Sana-tiny_diffusers"
    transformer = SanaTransformer2DModel(**_sana_config(dims)).eval()
    with torch.no_grad():
        for p in transformer.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    transformer.save_pretrained(str(sana / "transformer"), safe_serialization=True)
    (sana / "scheduler").mkdir(parents=True, exist_ok=True)
    (sana / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
    (sana / "model_index.json").write_text(json.dumps({
        "_class_name": "SanaPipeline", "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        "transformer": ["diffusers", "SanaTransformer2DModel"], "vae": ["diffusers", "AutoencoderDC"],
        "text_encoder": ["transformers", "Gemma2Model"], "tokenizer": ["transformers", "GemmaTokenizerFast"]}))
    return sana, transformer


def write_vae(root: Path, seed: int) -> Path:
    from diffusers import AutoencoderDC

    torch.manual_seed(seed)
    folder = root / "dc-ae-tiny-diffusers"
    vae = AutoencoderDC(
        in_channels=3, latent_channels=32, attention_head_dim=8,
        encoder_block_types=("ResBlock",) * 4 + ("EfficientViTBlock",) * 2,
        decoder_block_types=("ResBlock",) * 4 + ("EfficientViTBlock",) * 2,
        encoder_block_out_channels=(8, 8, 16, 16, 16, 32), decoder_block_out_channels=(8, 8, 16, 16, 16, 32),
        encoder_layers_per_block=(1, 1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1, 1),
        encoder_qkv_multiscales=((), (), (), (), (5,), (5,)), decoder_qkv_multiscales=((), (), (), (), (5,), (5,)),
        upsample_block_type="interpolate", downsample_block_type="Conv",
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407,
    ).eval()
    vae.save_pretrained(str(folder), safe_serialization=True)
    return folder


def openuni_state_dict(dims: dict, base_transformer, seed: int, with_transformer: bool = True) -> dict[str, torch.Tensor]:
    from transformers import SiglipTextConfig
    from transformers.models.siglip.modeling_siglip import SiglipEncoder

    torch.manual_seed(seed)
    h = dims["llm_hidden"]
    cfg = SiglipTextConfig(hidden_size=h, intermediate_size=3 * h, num_hidden_layers=dims["connector_layers"],
                           num_attention_heads=dims["connector_heads"], hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                           bos_token_id=None, eos_token_id=None, pad_token_id=None)
    connector = SiglipEncoder(cfg)
    sd: dict[str, torch.Tensor] = {"meta_queries": torch.randn(NUM_QUERIES, h) * 0.02}
    for k, v in connector.state_dict().items():
        sd[f"connector.{k}"] = v + torch.randn_like(v) * 0.02
    proj = torch.nn.Linear(h, dims["caption_channels"])
    sd.update({f"projector.{k}": v for k, v in proj.state_dict().items()})
    if with_transformer:  # a fine-tuned SANA, as in the blip3o60k checkpoints
        for k, v in base_transformer.state_dict().items():
            sd[f"transformer.{k}"] = v + torch.randn_like(v) * 0.05
    return {k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}


def tiny_paths(root, name: str = "tiny-B") -> TinyModels:
    """Where `write_tiny_models(root, name)` puts each part (nothing is read or written)."""
    root = Path(root) / name
    pth = root / f"openuni_{name.lower().replace('-', '_')}_blip3o60k.pth"
    return TinyModels(root, root / "InternVL3-tiny", root / "InternVL3-tiny-hf", root / "Sana-tiny_diffusers",
                      root / "dc-ae-tiny-diffusers", pth, pth.with_suffix(".safetensors"), name)


def write_tiny_models(root, variant: str = "tiny-B", seed: int = 0, *, dims: dict | None = None,
                      checkpoint_config: dict | None = None) -> TinyModels:
    """Write a complete tiny OpenUni set under `root` and return where each part is.

    variant: a test-only row of the variant table; or, with `dims` (keys of `tiny_dims`' result, any subset),
    any name for a set of other widths. checkpoint_config: stored with the checkpoints (checkpoint.CONFIG_KEY).
    """
    if dims is None and (variant not in VARIANTS or not VARIANTS[variant].test_only):
        raise ValueError(f"tiny models exist for {[n for n, v in VARIANTS.items() if v.test_only]}, not {variant!r}")
    paths = tiny_paths(root, variant)
    paths.root.mkdir(parents=True, exist_ok=True)
    dims = {**tiny_dims(VARIANTS.get(variant, VARIANTS["tiny-B"])), **(dims or {})}
    write_internvl(paths.root, dims, seed)
    _, transformer = write_sana(paths.root, dims, seed + 1)
    write_vae(paths.root, seed + 2)
    sd = openuni_state_dict(dims, transformer, seed + 3)
    extra = {CONFIG_KEY: checkpoint_config} if checkpoint_config else {}
    torch.save({**sd, **extra}, paths.checkpoint)
    save_file(sd, str(paths.checkpoint_safetensors), metadata={k: json.dumps(v) for k, v in extra.items()} or None)
    return paths
