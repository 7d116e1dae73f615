"""The declared dependency floors give the newest releases' results, and what would not is refused clearly.

The outputs themselves are compared across versions by CI (.ci/run: tests/reference_outputs.py on the oldest pins
against values the newest releases wrote); here: that mechanism, the floors' bookkeeping, and each guard.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
from packaging.version import Version
from PIL import Image

from openuni_core import compat
from openuni_core.errors import OpenUniError
from openuni_core.loading import inspect_openuni
from openuni_core.internvl import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import reference_outputs  # noqa: E402


def _floors(lines) -> dict[str, str]:
    found = (re.match(r"\s*\"?([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", line) for line in lines)
    return {m[1].lower().replace("-", "_"): m[2] for m in found if m}


def test_every_floor_is_what_the_oldest_ci_run_installs():
    """Would catch: a floor lowered in requirements.txt (e.g. back to diffusers>=0.32) without the CI pin, a floor
    that differs between requirements.txt and pyproject.toml, or a requirement the oldest run leaves unpinned."""
    required = _floors((ROOT / "requirements.txt").read_text().splitlines())
    deps = re.search(r"(?s)^dependencies = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(), re.M)[1]
    pins = dict(re.findall(r"(?m)^([A-Za-z0-9_.-]+)==([0-9.]+)", (ROOT / ".ci" / "oldest-pins.txt").read_text()))
    assert _floors(deps.splitlines()) == required
    for name, floor in required.items():
        pin = Version(pins[name]).release
        assert pin[:len(Version(floor).release)] == Version(floor).release, (name, floor, pins[name])
    assert Version(required["diffusers"]) == Version(compat.DIFFUSERS_FLOOR) >= Version("0.33")


def test_diffusers_below_the_floor_is_refused_before_loading(tiny, monkeypatch):
    """diffusers 0.32 builds SANA 512/1024 with a sinusoidal positional embedding their configs do not ask for
    (latents off by up to ~1.5). Would catch: dropping the version check from compat.check_diffusers."""
    import diffusers

    monkeypatch.setattr(diffusers, "__version__", "0.32.2")
    with pytest.raises(OpenUniError, match=r"diffusers 0\.32\.2 .*positional embedding.*diffusers>=0\.33"):
        inspect_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae)


def test_dcae_settings_an_old_diffusers_would_ignore_are_refused(tiny, tmp_path, monkeypatch):
    """diffusers < 0.35 drops decoder_conv_act_fn & co. with a log line and builds another DC-AE. Would catch:
    removing AutoencoderDC from the classes compat.check_diffusers looks at."""
    import diffusers

    class DCAE033:  # diffusers 0.33's constructor: no decoder_conv_act_fn / *_shortcut settings
        def __init__(self, in_channels=3, latent_channels=32, decoder_act_fns="silu", scaling_factor=1.0):
            pass

    vae = shutil.copytree(tiny.vae, tmp_path / "vae")
    monkeypatch.setattr(diffusers, "AutoencoderDC", DCAE033)
    cfg = json.loads((vae / "config.json").read_text())
    compat.check_diffusers({"AutoencoderDC": (cfg, vae)})  # the defaults change nothing: fine
    cfg["decoder_conv_act_fn"] = "silu"
    (vae / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(OpenUniError, match=r"vae uses \['decoder_conv_act_fn'\].*diffusers>=0\.35"):
        inspect_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, vae)


def test_the_tiny_kit_writes_the_spelling_every_supported_transformers_reads(tiny):
    """Real InternVL3-hf folders use transformers 4.x's spelling, which 5.x reads too. Would catch: the kit keeping
    what transformers 5 writes (a list-valued extra_special_tokens 4.x cannot read, rope_theta only inside
    rope_parameters, which 4.x ignores, or an lm_head left out of the weights for 4.x to initialise randomly)."""
    from safetensors import safe_open

    tok = json.loads((tiny.mllm_hf / "tokenizer_config.json").read_text())
    cfg = json.loads((tiny.mllm_hf / "config.json").read_text())
    assert not isinstance(tok.get("extra_special_tokens"), list) and "<IMG_CONTEXT>" in tok["additional_special_tokens"]
    assert cfg["text_config"]["rope_theta"] == 1000000.0 and "rope_parameters" not in cfg["text_config"]
    assert cfg.get("tie_word_embeddings") is False and not cfg["text_config"].get("tie_word_embeddings", False)
    with safe_open(str(tiny.mllm_hf / "model.safetensors"), "pt") as f:
        assert "language_model.lm_head.weight" in f.keys()


def test_a_tokenizer_in_transformers_5_spelling_is_named_where_transformers_cannot_read_it(tiny, tmp_path,
                                                                                          monkeypatch):
    """Would catch: load_tokenizer passing such a folder to transformers 4.x (which fails with "'list' object has
    no attribute 'keys'", or asks for protobuf) instead of naming the file, the setting and the fix."""
    folder = shutil.copytree(tiny.mllm_hf, tmp_path / "hf5")
    path = folder / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["extra_special_tokens"] = cfg.pop("additional_special_tokens")
    path.write_text(json.dumps(cfg))
    if compat.TRANSFORMERS_5:  # this transformers reads both spellings alike
        text = "<|im_start|>user\n<img><IMG_CONTEXT></img> a fox<|im_end|>"
        assert load_tokenizer(folder)(text).input_ids == load_tokenizer(tiny.mllm_hf)(text).input_ids
    monkeypatch.setattr(compat, "TRANSFORMERS_5", False)
    with pytest.raises(OpenUniError, match=r"hf5/tokenizer_config\.json: its setting `extra_special_tokens` is a list"
                                           r".*Upgrade transformers.*rename `extra_special_tokens` to "
                                           r"`additional_special_tokens`"):
        load_tokenizer(folder)


def test_a_tall_image_is_resized_width_first_on_every_pillow():
    """Pillow 13 resizes height first when the height shrinks much more than the width, which rounds differently
    (up to 19/255 on this thumbnail). Would catch: tile_image's thumbnail resized in one PIL call."""
    from openuni_core.images import tile_image

    image = Image.fromarray(reference_outputs.to_uint8(reference_outputs.pattern(90, 500, 9)).numpy())
    two_passes = image.resize((448, 500), Image.BICUBIC).resize((448, 448), Image.BICUBIC)  # Pillow < 13's order
    thumbnail = tile_image(image, 6)[-1]
    assert np.array_equal(np.asarray(thumbnail), np.asarray(two_passes))
    if Version(PIL.__version__) >= Version("13"):  # the case has teeth here: one call gives other pixels
        assert not np.array_equal(np.asarray(image.resize((448, 448), Image.BICUBIC)), np.asarray(two_passes))


def test_the_oldest_pins_check_compares_with_a_reference_and_names_what_differs(tiny, tmp_path):
    """CI's oldest-pins comparison, run here against a reference computed in this process. Would catch: a check that
    passes on outputs it never compared, one that ignores changed model files, or a report without the output's
    name and difference."""
    outputs = reference_outputs.compute(tiny)
    ref = tmp_path / "reference.safetensors"
    reference_outputs.save(ref, outputs, reference_outputs.file_hashes(tiny))
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "reference_outputs.py"), "check", str(tiny.root.parent),
                          str(ref)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "SAME: " in run.stdout, run.stdout + run.stderr[-2000:]

    bad = dict(outputs)
    bad["latents/dpmpp"] = outputs["latents/dpmpp"] + 1e-3
    bad["image/dpmpp_uint8"] = outputs["image/dpmpp_uint8"].clone()
    bad["image/dpmpp_uint8"][0, 0, 0, 0] ^= 1
    bad["caption/original/greedy_ids"] = outputs["caption/original/greedy_ids"] + 1
    bad["caption/hf/greedy_text"] = outputs["caption/hf/greedy_text"] + "!"
    del bad["vae/encode"]
    problems = dict(p.split(": ", 1) for p in reference_outputs.compare(outputs, bad))
    assert sorted(problems) == ["caption/hf/greedy_text", "caption/original/greedy_ids", "image/dpmpp_uint8",
                                "latents/dpmpp", "vae/encode"]
    assert problems["latents/dpmpp"].startswith("max diff 0.001 ") and problems["vae/encode"] == "missing"
    assert problems["image/dpmpp_uint8"] == problems["caption/original/greedy_ids"] == "max diff 1 (tolerance 0)"
    assert reference_outputs.compare(outputs, {**outputs, "latents/euler": outputs["latents/euler"] + 5e-6}) == []

    torch.save({}, tiny.root.parent / "unused.pth")  # a file outside the set changes nothing
    reference_outputs.save(ref, outputs, {**reference_outputs.file_hashes(tiny), "dc-ae-tiny-diffusers/config.json": "0"})
    assert reference_outputs.check(tiny.root.parent, ref) == [
        "model files differ from the reference's: ['dc-ae-tiny-diffusers/config.json']"]
