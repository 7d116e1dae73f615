"""Broken model files are named — folder, file, the tensors, where to get the folder again — never a raw traceback,
and no weight is ever left randomly initialised."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from openuni_core.errors import OpenUniError
from openuni_core.loading import inspect_openuni, load_openuni


def _drop_tensor(folder, file, key):
    sd = load_file(str(folder / file))
    del sd[key]
    save_file(sd, str(folder / file), metadata={"format": "pt"})


def _without_transformer_group(tiny, path):
    """The checkpoint minus its fine-tuned SANA, so the SANA folder's own weights are used."""
    torch.save({k: v for k, v in torch.load(tiny.checkpoint, weights_only=True).items()
                if not k.startswith("transformer.")}, path)
    return path


@pytest.mark.parametrize("part, file, key, names", [
    ("vae", "diffusion_pytorch_model.safetensors", "decoder.conv_in.weight",
     r"dc-ae-tiny-diffusers/diffusion_pytorch_model\.safetensors does not hold the weights .*config\.json describes: "
     r"1 missing \(decoder\.conv_in\.weight\).*re-download the folder from mit-han-lab/dc-ae-f32c32-sana-1\.1-diffusers"),
    ("sana", "transformer/diffusion_pytorch_model.safetensors", "proj_out.weight",
     r"transformer/diffusion_pytorch_model\.safetensors does not hold the weights .*config\.json describes: 1 missing "
     r"\(proj_out\.weight\).*re-download the folder from"),
])
def test_a_diffusers_folder_missing_a_tensor_is_named_before_loading(tiny, tmp_path, part, file, key, names):
    """Would catch: folder weights handed to diffusers unchecked (it fails with "Cannot copy out of meta tensor; no
    data!", naming no file)."""
    folders = {"sana": tiny.sana, "vae": tiny.vae}
    broken = shutil.copytree(folders[part], tmp_path / folders[part].name)
    _drop_tensor(broken, file, key)
    args = {**folders, part: broken}
    ckpt = _without_transformer_group(tiny, tmp_path / "plain.pth")
    with pytest.raises(OpenUniError, match=names):
        inspect_openuni(ckpt, tiny.mllm_original, args["sana"], args["vae"])


@pytest.mark.parametrize("fmt, key", [("original", "language_model.model.layers.0.mlp.up_proj.weight"),
                                      ("hf", "language_model.model.layers.0.mlp.up_proj.weight")])
def test_an_internvl3_folder_missing_a_tensor_is_named(tiny, tmp_path, fmt, key):
    """Would catch: an -hf folder loaded with transformers' "newly initialized" warning only (a random layer), or
    the original format's bare load_state_dict error without the file and the fix."""
    source = tiny.mllm_original if fmt == "original" else tiny.mllm_hf
    broken = shutil.copytree(source, tmp_path / source.name)
    _drop_tensor(broken, "model.safetensors", key)
    with pytest.raises(OpenUniError, match=rf"{source.name} \(model\.safetensors\) does not hold the weights its "
                                           r"config\.json describes: 1 missing \(.*layers\.0\.mlp\.up_proj\.weight\).*"
                                           r"re-download the folder from"):
        load_openuni(tiny.checkpoint, broken, tiny.sana, tiny.vae, dtype="fp32", device="cpu")


def test_a_dcae_config_that_does_not_describe_its_weights_is_refused(tiny, tmp_path):
    """Would catch: a DC-AE built from a config.json that disagrees with its weights, loading with diffusers'
    "newly initialized" warning and decoding garbage."""
    vae = shutil.copytree(tiny.vae, tmp_path / "dc-ae")
    cfg = json.loads((vae / "config.json").read_text())
    cfg["decoder_layers_per_block"] = [1, 1, 1, 1, 2, 1]
    (vae / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(OpenUniError, match=r"dc-ae/diffusion_pytorch_model\.safetensors does not hold the weights "
                                           r".*dc-ae/config\.json describes: 15 missing \(decoder\.up_blocks\.4\.2\.attn\.to_q\.weight, "):
        load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, vae, dtype="fp32", device="cpu")
    cfg["decoder_layers_per_block"] = [1] * 6
    cfg["decoder_block_out_channels"] = [8, 8, 16, 16, 32, 32]
    (vae / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(OpenUniError, match=r"of another shape \(decoder\..*: \[16, .*\] in the file, \[32, .*\] in "
                                           r"config\.json"):
        inspect_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, vae)


def test_a_refused_pth_names_the_unsafe_object_without_terminal_colours(tiny, tmp_path):
    """Would catch: the refusal quoting only torch's first line ("Weights only load failed ...", with its ANSI
    colour codes) instead of what the file holds."""
    sd = torch.load(tiny.checkpoint, weights_only=True)
    torch.save({"state_dict": sd, "step": np.float64(3.0)}, tmp_path / "train_state.pth")
    with pytest.raises(OpenUniError) as e:
        inspect_openuni(tmp_path / "train_state.pth", tiny.mllm_original, tiny.sana, tiny.vae)
    assert "\x1b" not in str(e.value)
    assert "Refused to load" in str(e.value) and "numpy" in str(e.value) and "multiarray.scalar" in str(e.value)


def test_a_deepspeed_style_training_state_is_unwrapped(tiny, model, tmp_path):
    """Would catch: only {"state_dict": ...} unwrapped, so {"module": ...} fails with "keys cannot be placed"."""
    torch.save({"module": torch.load(tiny.checkpoint, weights_only=True), "global_steps": 1000},
               tmp_path / "mp_rank_00_model_states.pt")
    m = load_openuni(tmp_path / "mp_rank_00_model_states.pt", tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32",
                     device="cpu")
    assert torch.equal(m.encode_prompt("a fox").embeds, model.encode_prompt("a fox").embeds)
