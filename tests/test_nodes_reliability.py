"""Reliability and security through the NODES, called as ComfyUI calls them (a fresh instance, FUNCTION(**inputs),
under torch.inference_mode()), on tiny OpenUni-B-like and OpenUni-L-like models from disk.

- a table of bad inputs: each refused with a specific message before any heavy work (the heavy functions are
  replaced by ones that fail the test if called), and a valid run succeeds right after each;
- inputs that are accepted on purpose (empty negatives, unicode prompts, alpha/grayscale/1×1/large images, mixed
  sizes); an empty prompt is refused (the table), never drawn as an unguided image;
- Stop mid-sampling and mid-caption, then a rerun equal to an uninterrupted run; 50 runs without leaks;
- injected out-of-memory; two variants in one graph and switching variants; names that try to leave the
  model folders; no network without download_missing, at import, or when workflows are loaded;
- hypothesis over the sampler's and the caption node's inputs.

The engine-level counterparts are in tests/test_core_bad_inputs.py and tests/test_core_reliability.py.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import weakref
from pathlib import Path

import psutil
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from comfy_pack import ROOT, FakeComfy, InterruptProcessingException, load_pack, unload_pack  # noqa: E402
from references import may_hold_control_token, valid_caption, valid_sampling  # noqa: E402

PACK = "openuni_reliability_pack"
B = dict(checkpoint="openuni_tiny_b.safetensors", mllm="InternVL3-tiny-B", sana="Sana-tiny-B", vae="dc-ae-tiny",
         precision="fp32", memory="keep parts loaded", attention="auto", download_missing=False)
L = dict(B, checkpoint="openuni_tiny_l.safetensors", mllm="InternVL3-tiny-L", sana="Sana-tiny-L")
RELEASED_B = "openuni_b_internvl3_1b_sana_0_6b_512_hf_blip3o60k.pth"
NAN, INF = float("nan"), float("inf")


def core(name: str):
    """A module of the engine as the pack imported it (its exception classes are the ones the nodes raise)."""
    return sys.modules[f"{PACK}.openuni_core.{name}"]


class Env:
    def __init__(self, base: Path, fake: FakeComfy, pack, tiny_b, tiny_l):
        self.base, self.fake, self.pack, self.tiny_b, self.tiny_l = base, fake, pack, tiny_b, tiny_l
        self.openuni = base / "models" / "openuni"

    def call(self, name, **inputs):
        cls = self.pack.NODE_CLASS_MAPPINGS[name]
        with torch.inference_mode():
            return getattr(cls(), cls.FUNCTION)(**inputs)


def _strip_special_token(folder: Path, token: str) -> None:
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["added_tokens_decoder"] = {k: v for k, v in cfg["added_tokens_decoder"].items() if v["content"] != token}
    cfg["additional_special_tokens"] = [t for t in cfg["additional_special_tokens"] if t != token]
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))


def place_models(tiny_b, tiny_l, openuni: Path) -> None:
    """Both tiny variants in ComfyUI's layout, plus broken files and folders for the bad-input table."""
    for sub in ("mllm", "sana", "vae"):
        (openuni / sub).mkdir(parents=True, exist_ok=True)
    for tiny, tag in ((tiny_b, "b"), (tiny_l, "l")):
        shutil.copy(tiny.checkpoint_safetensors, openuni / f"openuni_tiny_{tag}.safetensors")
        shutil.copy(tiny.checkpoint, openuni / f"openuni_tiny_{tag}.pth")
        shutil.copytree(tiny.mllm_original, openuni / "mllm" / f"InternVL3-tiny-{tag.upper()}")
        shutil.copytree(tiny.sana, openuni / "sana" / f"Sana-tiny-{tag.upper()}")
    shutil.copytree(tiny_b.vae, openuni / "vae" / "dc-ae-tiny")
    data = tiny_b.checkpoint.read_bytes()
    (openuni / "openuni_truncated.pth").write_bytes(data[: len(data) // 2])
    data = tiny_b.checkpoint_safetensors.read_bytes()
    (openuni / "openuni_truncated.safetensors").write_bytes(data[: len(data) // 3])
    (openuni / "openuni_empty.pth").write_bytes(b"")
    torch.save({"weights": torch.zeros(2)}, openuni / "openuni_not_openuni.pth")
    no_config = shutil.copytree(tiny_b.mllm_original, openuni / "mllm" / "InternVL3-no-config")
    (no_config / "config.json").unlink()
    _strip_special_token(shutil.copytree(tiny_b.mllm_original, openuni / "mllm" / "InternVL3-no-special-tokens"),
                         "<IMG_CONTEXT>")
    no_transformer_config = shutil.copytree(tiny_b.sana, openuni / "sana" / "Sana-no-transformer-config")
    (no_transformer_config / "transformer" / "config.json").unlink()
    (shutil.copytree(tiny_b.vae, openuni / "vae" / "dc-ae-no-config") / "config.json").unlink()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from openuni_core.tiny import write_tiny_models

    base = tmp_path_factory.mktemp("comfy_reliability")
    tiny_b = write_tiny_models(tmp_path_factory.mktemp("tiny_b"), "tiny-B", seed=0)
    tiny_l = write_tiny_models(tmp_path_factory.mktemp("tiny_l"), "tiny-L", seed=5)
    place_models(tiny_b, tiny_l, base / "models" / "openuni")
    fake = FakeComfy(base).install()
    try:
        pack = load_pack(PACK)
        sys.modules[f"{PACK}.nodes"].model_files.register_folders()
        yield Env(base, fake, pack, tiny_b, tiny_l)
    finally:
        fake.uninstall()
        unload_pack(PACK)


class Graph:
    """Two loader nodes (tiny-B and tiny-L) in one graph, and what their encode nodes made."""

    def __init__(self, env):
        self.env = env
        self.ml = env.call("OpenUniModelLoader", **L)[0]
        self.mb = env.call("OpenUniModelLoader", **B)[0]
        self.pos, self.neg = env.call("OpenUniTextEncode", model=self.mb, prompt="a red fox", negative_prompt="")
        self.pos_l, self.neg_l = env.call("OpenUniTextEncode", model=self.ml, prompt="a red fox", negative_prompt="")

    def sample(self, model=None, **kw):
        args = dict(model=model or self.mb, positive=self.pos, negative=self.neg, seed=1, steps=2, cfg=4.5,
                    sampler="dpmpp", width=64, height=64, batch_size=1)
        args.update(kw)
        return self.env.call("OpenUniSampler", **args)

    def caption(self, image, **kw):
        args = dict(model=self.mb, image=image, question="What is this?", max_tiles=2, max_new_tokens=3,
                    temperature=0.0, seed=0)
        args.update(kw)
        return self.env.call("OpenUniCaption", **args)

    def load(self, **kw):
        return self.env.call("OpenUniModelLoader", **{**B, **kw})


@pytest.fixture(scope="module")
def g(env):
    return Graph(env)


@pytest.fixture
def fake(env):
    env.fake.progress.clear()
    env.fake.interrupt_after, env.fake.interrupt_checks = None, 0
    yield env.fake
    env.fake.interrupt_after = None


def valid_run(env) -> None:
    """What the user runs next: load, encode, sample, decode, all through the nodes."""
    m = env.call("OpenUniModelLoader", **B)[0]
    pos, neg = env.call("OpenUniTextEncode", model=m, prompt="a red fox", negative_prompt="")
    (lat,) = env.call("OpenUniSampler", model=m, positive=pos, negative=neg, seed=1, steps=1, cfg=4.5,
                      sampler="dpmpp", width=64, height=64, batch_size=1)
    (img,) = env.call("OpenUniVAEDecode", model=m, latent=lat, tiling="auto")
    assert img.shape == (1, 64, 64, 3) and torch.isfinite(img).all()


def _heavy(*a, **k):
    raise AssertionError("heavy work started before the bad input was refused")


def forbid_heavy(mp: pytest.MonkeyPatch, *models) -> None:
    """Reading weights, and every forward pass of the loaded models, fail the test if reached."""
    from diffusers import AutoencoderDC, SanaTransformer2DModel
    from transformers import InternVLForConditionalGeneration

    mp.setattr(core("internvl"), "_read_safetensors", _heavy)
    for cls in (InternVLForConditionalGeneration, SanaTransformer2DModel, AutoencoderDC):
        mp.setattr(cls, "from_pretrained", _heavy)
    mp.setattr(core("chat"), "caption_pixel_values", _heavy)
    mp.setattr(core("prompt_encoder"), "edit_pixel_values", _heavy)
    for m in models:
        mp.setattr(m.transformer, "forward", _heavy)
        mp.setattr(m.vae, "decode", _heavy)
        mp.setattr(m.vae, "encode", _heavy)
        mp.setattr(m.mllm, "generate", _heavy)
        mp.setattr(m.mllm.model.language_model, "forward", _heavy)
        mp.setattr(m.mllm.model.vision_tower, "forward", _heavy)


# ----- the bad-input table ------------------------------------------------------------------------------------

def latent(*shape, fill=None):
    t = torch.randn(*shape) if fill is None else torch.full(shape, fill)
    return {"samples": t}


def image(*shape, fill=None):
    return torch.rand(*shape) if fill is None else torch.full(shape, fill)


BAD = {
    # -- model files: every combination of parts from the wrong variant -------------------------------------
    "B checkpoint + L InternVL3": (lambda g: g.load(mllm=L["mllm"]),
                                   r"Mismatched models: .*LLM width 32.*LLM width 48"),
    "B checkpoint + L SANA": (lambda g: g.load(sana=L["sana"]), r"Mismatched models: .*needs .*but .*Sana-tiny-L"),
    "B checkpoint + L InternVL3 + L SANA": (lambda g: g.load(mllm=L["mllm"], sana=L["sana"]),
                                            r"Mismatched models: .*InternVL3 folder that matches"),
    "L checkpoint + B InternVL3": (lambda g: g.load(**{**L, "mllm": B["mllm"]}),
                                   r"Mismatched models: .*LLM width 48.*LLM width 32"),
    "L checkpoint + B SANA": (lambda g: g.load(**{**L, "sana": B["sana"]}), r"Mismatched models: .*but .*Sana-tiny-B"),
    "L checkpoint + B InternVL3 + B SANA": (lambda g: g.load(checkpoint=L["checkpoint"]),
                                            r"Mismatched models: .*LLM width 48.*LLM width 32"),
    # -- damaged files ----------------------------------------------------------------------------------------
    "truncated .pth": (lambda g: g.load(checkpoint="openuni_truncated.pth"),
                       r"truncated or corrupt.*download it again"),
    "truncated .safetensors": (lambda g: g.load(checkpoint="openuni_truncated.safetensors"), r"corrupt or truncated"),
    "empty checkpoint": (lambda g: g.load(checkpoint="openuni_empty.pth"), r"is empty \(0 bytes\)"),
    "not an OpenUni state dict": (lambda g: g.load(checkpoint="openuni_not_openuni.pth"), r"keys cannot be placed"),
    "InternVL3 folder without config.json": (lambda g: g.load(mllm="InternVL3-no-config"),
                                             r"config\.json is missing in .*InternVL3-no-config"),
    "tokenizer without special tokens": (lambda g: g.load(mllm="InternVL3-no-special-tokens"),
                                         r"lacks the special tokens \['<IMG_CONTEXT>'\]"),
    "SANA folder without transformer config": (lambda g: g.load(sana="Sana-no-transformer-config"),
                                               r"SANA folder .*config\.json is missing"),
    "DC-AE folder without config.json": (lambda g: g.load(vae="dc-ae-no-config"),
                                         r"DC-AE folder .*config\.json is missing"),
    "unknown precision": (lambda g: g.load(precision="fp8"), r"Unknown precision 'fp8'"),
    "unknown memory setting": (lambda g: g.load(memory="all of it"), r"Unknown memory setting 'all of it'"),
    # -- sampler sizes and settings (ComfyUI's min/max would stop most first; the node must say it too) ----
    "width 0": (lambda g: g.sample(width=0), r"width 0 is not allowed: .*multiple of 32 between 32 and 4096"),
    "width 16": (lambda g: g.sample(width=16), r"width 16 is not allowed.*Try 32"),
    "width 500": (lambda g: g.sample(width=500), r"width 500 is not allowed.*Try 512"),
    "width 10000": (lambda g: g.sample(width=10000), r"width 10000 is not allowed.*Try 4096"),
    "height 16": (lambda g: g.sample(height=16), r"height 16 is not allowed"),
    "steps 0": (lambda g: g.sample(steps=0), r"steps 0 is not allowed: use 1 to 1000"),
    "steps 1001": (lambda g: g.sample(steps=1001), r"steps 1001 is not allowed"),
    "cfg below 0": (lambda g: g.sample(cfg=-0.5), r"cfg -0\.5 is not allowed: use 0 to 100"),
    "cfg NaN": (lambda g: g.sample(cfg=NAN), r"cfg nan is not allowed"),
    "unknown sampler": (lambda g: g.sample(sampler="ddim"), r"Unknown sampler 'ddim'"),
    "batch_size 0": (lambda g: g.sample(batch_size=0), r"batch_size 0 is not allowed"),
    "denoise 0 with a latent": (lambda g: g.sample(latent=latent(1, 32, 2, 2), denoise=0.0),
                                r"denoise/strength 0\.0 is not allowed"),
    "denoise 1.5 with a latent": (lambda g: g.sample(latent=latent(1, 32, 2, 2), denoise=1.5),
                                  r"denoise/strength 1\.5 is not allowed"),
    # -- latents from elsewhere ---------------------------------------------------------------------------------
    "SD latent (4 channels) into the sampler": (lambda g: g.sample(latent=latent(1, 4, 8, 8), denoise=0.5),
                                                r"has shape \[1, 4, 8, 8\]; OpenUni \(DC-AE f32c32\) latents are"),
    "16-channel latent (SD3/Flux) into the sampler": (lambda g: g.sample(latent=latent(1, 16, 8, 8), denoise=0.5),
                                                      r"has shape \[1, 16, 8, 8\].*another model's VAE"),
    "video latent (5-D) into the sampler": (lambda g: g.sample(latent=latent(1, 16, 3, 8, 8), denoise=0.5),
                                            r"has shape \[1, 16, 3, 8, 8\]"),
    "NaN latent into the sampler": (lambda g: g.sample(latent=latent(1, 32, 2, 2, fill=NAN), denoise=0.5),
                                    r"NaN or infinite values"),
    "inf latent into the sampler": (lambda g: g.sample(latent=latent(1, 32, 2, 2, fill=INF), denoise=0.5),
                                    r"NaN or infinite values"),
    "empty latent batch": (lambda g: g.sample(latent=latent(0, 32, 2, 2)), r"latent input is empty"),
    "bare tensor as LATENT": (lambda g: g.sample(latent=torch.zeros(1, 32, 2, 2)), r"must be a ComfyUI LATENT"),
    "3 prompts for 2 latents": (lambda g: g.sample(positive=g.pos * 3, latent=latent(2, 32, 2, 2)),
                                r"latent holds 2 images but the positive conditioning 3 prompts"),
    "4-channel latent into VAE Decode": (lambda g: g.env.call("OpenUniVAEDecode", model=g.mb,
                                                              latent=latent(1, 4, 8, 8)),
                                         r"has shape \[1, 4, 8, 8\]"),
    "NaN latent into VAE Decode": (lambda g: g.env.call("OpenUniVAEDecode", model=g.mb,
                                                        latent=latent(1, 32, 2, 2, fill=NAN)), r"NaN or infinite"),
    "inf latent into VAE Decode": (lambda g: g.env.call("OpenUniVAEDecode", model=g.mb,
                                                        latent=latent(1, 32, 2, 2, fill=-INF)), r"NaN or infinite"),
    "empty latent into VAE Decode": (lambda g: g.env.call("OpenUniVAEDecode", model=g.mb, latent=latent(0, 32, 2, 2)),
                                     r"latent input is empty"),
    # -- conditioning from elsewhere ------------------------------------------------------------------------
    "positive from the other loaded OpenUni model": (lambda g: g.sample(positive=g.pos_l),
                                                     r"positive conditioning was made by a different OpenUni model"),
    "negative from the other loaded OpenUni model": (lambda g: g.sample(negative=g.neg_l),
                                                     r"negative conditioning was made by a different OpenUni model"),
    "entries from two OpenUni models combined": (lambda g: g.sample(positive=g.pos + g.pos_l),
                                                 r"mixes entries encoded by different OpenUni models"),
    "CLIP-like conditioning [1,77,768] with {}": (lambda g: g.sample(positive=[[torch.randn(1, 77, 768), {}]]),
                                                  r"did not come from an OpenUni encode node.*\[1, 77, 768\]"),
    "a tensor as conditioning": (lambda g: g.sample(negative=torch.randn(1, 256, 2304)),
                                 r"negative input is not conditioning"),
    "not an OpenUni model": (lambda g: g.sample(model=object()), r"not an OpenUni model; connect OpenUni Model Loader"),
    # -- prompts ------------------------------------------------------------------------------------------------
    "prompt longer than the context": (lambda g: g.env.call("OpenUniTextEncode", model=g.mb, prompt="fox " * 9000,
                                                            negative_prompt=""),
                                       r"The prompt is \d+ tokens long; this model takes at most \d+ tokens for it "
                                       r"\(its 8192-token context, less 256 queries and \d+ tokens of chat template"),
    "negative longer than the context": (lambda g: g.env.call("OpenUniTextEncode", model=g.mb, prompt="a fox",
                                                              negative_prompt="blur " * 9000),
                                         r"The negative prompt is \d+ tokens long; .*Shorten the negative prompt"),
    "edit instruction longer than the context": (
        lambda g: g.env.call("OpenUniImageEditEncode", model=g.mb, image=image(1, 32, 32, 3),
                             instruction="fox " * 9000, negative_instruction=""),
        r"tokens long; this model takes at most"),
    "caption question longer than the context": (
        lambda g: g.caption(image(1, 8, 8, 3), question="fox " * 9000),
        r"The question is \d+ tokens long; with 1 image tile .*Shorten the question or lower max_tiles"),
    "empty prompt": (lambda g: g.env.call("OpenUniTextEncode", model=g.mb, prompt="", negative_prompt=""),
                     r"The prompt is empty; write what to draw \(if it comes from another node"),
    "prompt of spaces and control characters": (
        lambda g: g.env.call("OpenUniTextEncode", model=g.mb, prompt=" \t\x00\x07 ", negative_prompt="blur"),
        r"The prompt is empty"),
    "empty edit instruction": (lambda g: g.env.call("OpenUniImageEditEncode", model=g.mb, image=image(1, 32, 32, 3),
                                                    instruction="  ", negative_instruction=""),
                               r"The instruction is empty"),
    "prompt that is not text": (lambda g: g.env.call("OpenUniTextEncode", model=g.mb, prompt=None, negative_prompt=""),
                                r"The prompt input must be text, got NoneType"),
    # -- images ---------------------------------------------------------------------------------------------
    "caption question that is not text": (lambda g: g.caption(image(1, 8, 8, 3), question=["a", "b"]),
                                          r"The question input must be text, got list"),
    "edit image without batch dimension": (lambda g: g.env.call("OpenUniImageEditEncode", model=g.mb,
                                                                image=image(32, 32, 3), instruction="x"),
                                           r"must be a ComfyUI IMAGE batch \[batch, height, width, channels\]"),
    "edit image with 2 channels": (lambda g: g.env.call("OpenUniImageEditEncode", model=g.mb,
                                                        image=image(1, 32, 32, 2), instruction="x"),
                                   r"with 1, 3 or 4 channels, got \[32, 32, 2\]"),
    "edit image with NaN": (lambda g: g.env.call("OpenUniImageEditEncode", model=g.mb,
                                                 image=image(1, 32, 32, 3, fill=NAN), instruction="x"),
                            r"image contains NaN or infinite"),
    "edit list holding a non-image": (lambda g: g.env.call("OpenUniImageEditEncode", model=g.mb,
                                                           image=[image(32, 32, 3), "cat.png"], instruction="x"),
                                      r"list holding str; each entry must be an image"),
    "caption image 0 pixels tall": (lambda g: g.caption(image(1, 0, 8, 3)), r"got \[0, 8, 3\]"),
    "caption image with inf": (lambda g: g.caption(image(1, 8, 8, 3, fill=INF)), r"NaN or infinite"),
    "caption image above 67 MP": (lambda g: g.caption(torch.zeros(1, 1, 1, 3).expand(1, 9000, 8000, 3)),
                                  r"8000×9000; images above 67 MP are refused"),
    "caption max_tiles 0": (lambda g: g.caption(image(1, 8, 8, 3), max_tiles=0), r"max_tiles 0 is not allowed"),
    "caption max_new_tokens 0": (lambda g: g.caption(image(1, 8, 8, 3), max_new_tokens=0),
                                 r"max_new_tokens 0 is not allowed"),
    "caption temperature below 0": (lambda g: g.caption(image(1, 8, 8, 3), temperature=-0.5),
                                    r"temperature -0\.5 is not allowed: use 0 \(greedy\) to 5"),
    "caption temperature NaN": (lambda g: g.caption(image(1, 8, 8, 3), temperature=NAN), r"temperature nan"),
    "VAE Encode image below 32 px": (lambda g: g.env.call("OpenUniVAEEncode", model=g.mb, image=image(1, 16, 16, 3)),
                                     r"16×16; DC-AE needs at least 32×32"),
    "VAE Encode image with NaN": (lambda g: g.env.call("OpenUniVAEEncode", model=g.mb,
                                                       image=image(1, 32, 32, 3, fill=NAN)), r"NaN or infinite"),
    "VAE Encode list of mixed sizes": (lambda g: g.env.call("OpenUniVAEEncode", model=g.mb,
                                                            image=[image(32, 64, 3), image(64, 32, 3)]),
                                       r"different sizes or channels \(64×32, 32×64\)"),
}


def test_the_table_is_big_enough():
    assert len(BAD) >= 30


@pytest.mark.parametrize("run,pattern", [pytest.param(*c[:2], id=name, marks=c[2:]) for name, c in BAD.items()])
def test_bad_input_is_refused_before_heavy_work_and_the_next_run_succeeds(env, g, run, pattern, monkeypatch):
    errors = core("errors")
    with monkeypatch.context() as mp:
        forbid_heavy(mp, g.mb, g.ml)
        with pytest.raises(errors.OpenUniError, match=pattern):
            run(g)
    valid_run(env)


def test_malicious_pickle_checkpoint_is_refused_and_runs_nothing(env, g, tmp_path, monkeypatch):
    """A checkpoint whose unpickling would create a file: the loader refuses it, and no file appears."""

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    marker = tmp_path / "pwned"
    torch.save({"meta_queries": Evil()}, env.openuni / "openuni_evil.pth")  # zip format, as torch.save writes
    (env.openuni / "openuni_evil_raw.pth").write_bytes(pickle.dumps(Evil()))  # a bare pickle stream
    try:
        for name, pattern in (("openuni_evil.pth", r"Refused to load .*would run code"),
                              ("openuni_evil_raw.pth", r"openuni_evil_raw\.pth")):
            with monkeypatch.context() as mp:
                forbid_heavy(mp)
                with pytest.raises(core("errors").OpenUniError, match=pattern):
                    g.load(checkpoint=name)
            assert not marker.exists(), "unpickling ran code"
            valid_run(env)
    finally:
        for name in ("openuni_evil.pth", "openuni_evil_raw.pth"):
            (env.openuni / name).unlink()


# ----- inputs accepted on purpose ---------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", ["ünïcödé 猫 🦊 ﷽", "tab\tnew\nline", "nul\x00bell\x07esc\x1b[31mred",
                                    "\u202eright-to-left override", "a" * 2000],
                         ids=["unicode", "tab-newline", "control", "rtl", "long-2000"])
@pytest.mark.parametrize("negative", ["same", "   "])
def test_odd_prompts_are_accepted_and_cleaned(env, g, prompt, negative):
    """An empty (or blank) negative is the model's default; odd prompts are cleaned of control characters."""
    negative = prompt if negative == "same" else negative
    pos, neg = env.call("OpenUniTextEncode", model=g.mb, prompt=prompt, negative_prompt=negative)
    text = pos[0][1]["openuni_texts"][0]
    assert pos[0][0].shape == (1, 256, 2304) and torch.isfinite(pos[0][0]).all()
    assert text.startswith("Generate an image:") and not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text)
    assert neg[0][1]["openuni_texts"][0] == ("Generate an image." if not negative.strip() else text)
    (lat,) = g.sample(positive=pos, negative=neg, steps=1)
    assert torch.isfinite(lat["samples"]).all()


def test_text_that_spells_special_tokens_is_refused_before_work(env, g, monkeypatch):
    """'<IMG_CONTEXT>', '<|im_end|>' typed by a user would restructure the chat format: the engine refuses
    them with a message naming the token (never an internal error), before any model runs."""
    errors = core("errors")
    for text in ("<|im_end|>", "<img></img>", "<IMG_CONTEXT> here"):
        for run in (lambda: env.call("OpenUniTextEncode", model=g.mb, prompt=text, negative_prompt=""),
                    lambda: g.caption(image(1, 32, 32, 3), question=text),
                    lambda: env.call("OpenUniImageEditEncode", model=g.mb, image=image(1, 32, 32, 3), instruction=text,
                                     negative_instruction="")):
            with pytest.raises(errors.OpenUniError, match=r"control tokens of the model's chat format") as info:
                run()
            assert text.split()[0][:5] in str(info.value)
    pos, _ = env.call("OpenUniTextEncode", model=g.mb, prompt="a <b>bold</b> fox", negative_prompt="")
    assert pos[0][0].shape == (1, 256, 2304)


def test_alpha_and_grayscale_images_are_converted(env, g):
    rgb = torch.rand(1, 40, 56, 3)
    opaque = torch.cat([rgb, torch.ones(1, 40, 56, 1)], dim=-1)
    same = dict(temperature=1.0, seed=3)
    assert g.caption(opaque, **same)["result"] == g.caption(rgb, **same)["result"]  # alpha 1: the same picture
    gray = torch.rand(1, 40, 56, 1)
    assert g.caption(gray, **same)["result"] == g.caption(gray.expand(-1, -1, -1, 3), **same)["result"]
    transparent = torch.cat([rgb, torch.zeros(1, 40, 56, 1)], dim=-1)  # fully transparent → white
    assert g.caption(transparent, **same)["result"] == g.caption(torch.ones(1, 40, 56, 3), **same)["result"]
    pos, _ = env.call("OpenUniImageEditEncode", model=g.mb, image=opaque, instruction="x", negative_instruction="")
    ref, _ = env.call("OpenUniImageEditEncode", model=g.mb, image=rgb, instruction="x", negative_instruction="")
    torch.testing.assert_close(pos[0][0], ref[0][0])
    (lat,) = env.call("OpenUniVAEEncode", model=g.mb, image=torch.rand(1, 64, 64, 4))
    assert lat["samples"].shape == (1, 32, 2, 2)
    (lat,) = env.call("OpenUniVAEEncode", model=g.mb, image=torch.rand(1, 64, 64, 1))
    assert lat["samples"].shape == (1, 32, 2, 2)


@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (1, 1, 700, 3), (1, 2160, 4096, 3)])
def test_tiny_and_large_images_caption_and_edit(env, g, shape):
    img = torch.full(shape, 0.5)
    (answer,) = g.caption(img, max_tiles=4, max_new_tokens=2)["result"][0]
    assert isinstance(answer, str)
    if shape[1] * shape[2] < 1_000_000:
        pos, _ = env.call("OpenUniImageEditEncode", model=g.mb, image=img, instruction="x", negative_instruction="")
        assert pos[0][0].shape == (1, 256, 2304)


def test_mixed_size_images_as_a_python_list(env, g):
    """ComfyUI's IMAGE is one tensor, so mixed sizes only arrive as a list (from a node that hands one over):
    caption answers each, edit encodes one row each."""
    images = [torch.rand(40, 90, 3), torch.rand(1, 300, 64, 4), torch.rand(2, 32, 32, 1)]
    out = g.caption(images, temperature=1.0, seed=2)["result"][0]
    assert len(out) == 4 and out[0] == g.caption(images[0][None], temperature=1.0, seed=2)["result"][0][0]
    pos, neg = env.call("OpenUniImageEditEncode", model=g.mb, image=images, instruction="x", negative_instruction="")
    assert pos[0][0].shape == (4, 256, 2304) and neg[0][0].shape == (4, 256, 2304)
    (lat,) = env.call("OpenUniVAEEncode", model=g.mb, image=[torch.rand(64, 32, 3), torch.rand(1, 64, 32, 3)])
    assert lat["samples"].shape == (2, 32, 2, 1)


def test_accepted_sampler_edge_values(env, g):
    """Seeds up to 2**64-1, cfg 0 and 1 (no guidance), denoise without a latent (ignored), 1 step."""
    top = g.sample(seed=2**64 - 1, steps=1)[0]["samples"]
    assert torch.equal(top, g.sample(seed=2**64 - 1, steps=1)[0]["samples"])
    assert not torch.equal(top, g.sample(seed=0, steps=1)[0]["samples"])
    for cfg in (0.0, 1.0):
        assert torch.isfinite(g.sample(cfg=cfg, steps=1)[0]["samples"]).all()
    assert torch.equal(g.sample(denoise=0.3)[0]["samples"], g.sample()[0]["samples"])


def test_temperatures_below_001_caption_greedily(g):
    img = torch.rand(1, 48, 48, 3)
    greedy = g.caption(img, max_new_tokens=4)["result"]
    for t in (1e-300, 0.001, 0.009):
        assert g.caption(img, max_new_tokens=4, temperature=t, seed=7)["result"] == greedy


# ----- interrupts, leaks, out of memory ---------------------------------------------------------------------

def test_stop_mid_sampling_then_rerun_equals_uninterrupted(g, fake):
    expected = g.sample(steps=6, seed=21)[0]["samples"]
    fake.progress.clear()
    fake.interrupt_checks, fake.interrupt_after = 0, 3
    with pytest.raises(InterruptProcessingException):
        g.sample(steps=6, seed=21)
    assert [p[0] for p in fake.progress] == [1, 2]  # stopped between steps 2 and 3
    assert torch.equal(g.sample(steps=6, seed=21)[0]["samples"], expected)


def test_stop_mid_caption_then_rerun_equals_uninterrupted(g, fake):
    images = torch.rand(2, 40, 40, 3)
    args = dict(max_new_tokens=6, temperature=1.0, seed=5)
    fake.interrupt_checks = 0
    expected = g.caption(images, **args)["result"]
    checks = fake.interrupt_checks  # one check per generated token, over both images
    fake.interrupt_checks, fake.interrupt_after = 0, max(1, checks - 1)
    with pytest.raises(InterruptProcessingException):
        g.caption(images, **args)
    assert fake.interrupt_checks == max(1, checks - 1)
    assert g.caption(images, **args)["result"] == expected


def test_fifty_generations_do_not_leak(env, g):
    proc = psutil.Process()
    rss, fds = {}, {}
    for i in range(1, 51):
        pos, neg = env.call("OpenUniTextEncode", model=g.mb, prompt="a steady fox", negative_prompt="")
        (lat,) = g.sample(positive=pos, negative=neg, seed=i, steps=2, cfg=3.0)
        (img,) = env.call("OpenUniVAEDecode", model=g.mb, latent=lat, tiling="auto")
        assert img.shape == (1, 64, 64, 3)
        if i in (5, 50):
            gc.collect()
            rss[i] = proc.memory_info().rss
            fds[i] = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    assert rss[50] <= rss[5] * 1.05, (rss[5], rss[50])
    assert fds[50] <= fds[5], (fds[5], fds[50])


def _oom():
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return oom("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize("where", ["sampler", "decode"])
def test_injected_out_of_memory_is_explained_and_the_model_stays_usable(env, g, monkeypatch, where):
    (lat,) = g.sample(seed=8)
    expected = lat["samples"] if where == "sampler" else env.call("OpenUniVAEDecode", model=g.mb, latent=lat)[0]
    target, name = (g.mb.transformer, "forward") if where == "sampler" else (g.mb.vae, "decode")
    original, activations, released = getattr(target, name), [], []

    def flaky(*a, **k):
        if not activations:
            scratch = torch.empty(1 << 16)  # what a failed step holds when it runs out of memory
            activations.append(weakref.ref(scratch))
            raise _oom()
        return original(*a, **k)

    placement = core("placement")
    real_release = placement.release_memory
    monkeypatch.setattr(target, name, flaky)
    monkeypatch.setattr(placement, "release_memory", lambda: released.append(1) or real_release())
    run = (lambda: g.sample(seed=8)[0]["samples"]) if where == "sampler" else (
        lambda: env.call("OpenUniVAEDecode", model=g.mb, latent=lat)[0])
    with pytest.raises(core("errors").OpenUniError,
                       match=r"Out of memory while (sampling|decoding).*lower-memory policy \(offload the MLLM, or "
                             r"sequential offload\), a smaller width/height or batch size") as err:
        run()
    assert released, "memory was not released after the out-of-memory error"
    del err
    gc.collect()
    assert activations[0]() is None  # the failed step's tensors are gone once the error is handled
    assert torch.equal(run(), expected)


# ----- two variants, switching -----------------------------------------------------------------------------

def test_two_loaders_for_two_variants_in_one_graph(env, g):
    """Both models stay alive and each encodes and samples with its own weights."""
    assert g.mb.variant.name == "tiny-B" and g.ml.variant.name == "tiny-L" and g.mb.model_id != g.ml.model_id
    outs = {}
    for m, pos, neg in ((g.mb, g.pos, g.neg), (g.ml, g.pos_l, g.neg_l)):
        assert pos[0][1]["openuni_variant"] == m.variant.name
        (lat,) = g.sample(model=m, positive=pos, negative=neg, seed=4, steps=3)
        direct = m.sample(m.encode_prompt("a red fox"), m.encode_negative(""), width=64, height=64, steps=3,
                          cfg=4.5, seed=4)
        assert torch.equal(lat["samples"], direct)
        (img,) = env.call("OpenUniVAEDecode", model=m, latent=lat)
        outs[m.variant.name] = img
    assert not torch.equal(outs["tiny-B"], outs["tiny-L"])


def test_switching_variants_frees_the_replaced_model(env):
    """ComfyUI's node cache owns a loaded model: once it lets go (a switched loader input), the model is freed; the
    pack holds none itself (a strong cache of its own would keep the last one alive)."""
    def generate(m):
        pos, neg = env.call("OpenUniTextEncode", model=m, prompt="switch", negative_prompt="")
        (lat,) = env.call("OpenUniSampler", model=m, positive=pos, negative=neg, seed=1, steps=1, cfg=4.5,
                          sampler="dpmpp", width=64, height=64, batch_size=1)
        return env.call("OpenUniVAEDecode", model=m, latent=lat)[0]

    refs = []
    for checkpoint in ["openuni_tiny_b.pth", "openuni_tiny_l.pth", "openuni_tiny_b.pth"]:
        m = env.call("OpenUniModelLoader", **{**B, "checkpoint": checkpoint,
                                              "mllm": "InternVL3-tiny-" + checkpoint[-5].upper(),
                                              "sana": "Sana-tiny-" + checkpoint[-5].upper()})[0]
        assert generate(m).shape == (1, 64, 64, 3)
        refs.append(weakref.ref(m))
        del m  # ComfyUI's node cache lets go of the replaced loader output
        gc.collect()
        assert refs[-1]() is None, "a model nobody holds is still alive"


# ----- security -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("checkpoint", "openuni_tiny_b.pth\x00.safetensors"), ("mllm", "InternVL3-tiny-B\x00"),
    ("sana", "Sana-tiny-B\n../x"), ("vae", "\x1b[31mdc-ae-tiny"), ("checkpoint", "/etc/passwd"),
    ("checkpoint", "..\\..\\secret.pth"), ("mllm", "~/models/InternVL3"), ("sana", "//server/share/sana"),
    ("vae", "vae/../../../../tmp"), ("mllm", "D:relative"),
])
def test_names_that_leave_the_model_folders_are_refused_before_anything_is_read(env, g, field, value, monkeypatch):
    files = sys.modules[f"{PACK}.nodes.model_files"]
    monkeypatch.setattr(files, "list_folders", _heavy)  # refused on the name alone, before any folder listing
    monkeypatch.setattr(files, "list_checkpoints", _heavy)
    with pytest.raises(core("errors").OpenUniError,
                       match=r"(not a name inside the ComfyUI model folders|contains control characters)"):
        g.load(**{field: value})


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection or name lookup, or any huggingface_hub download, fails the test."""
    import huggingface_hub

    attempts = []

    def refuse(*a, **k):
        attempts.append(a[:2])
        raise AssertionError(f"network touched: {a[:2]}")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, refuse)
    return attempts


@pytest.fixture
def fresh_models_dir(env, tmp_path):
    """An empty ComfyUI models folder (nothing downloaded yet)."""
    fresh = FakeComfy(tmp_path / "fresh").install()
    files = sys.modules[f"{PACK}.nodes.model_files"]
    files.register_folders()
    yield tmp_path / "fresh" / "models"
    fresh.uninstall()
    files.register_folders()


def test_missing_files_without_download_missing_touch_no_network(env, fresh_models_dir, no_network):
    args = dict(B, checkpoint=RELEASED_B, mllm="auto", sana="auto", vae="auto")
    with pytest.raises(core("errors").MissingModelFilesError) as err:
        env.call("OpenUniModelLoader", **args)
    msg = str(err.value)
    root = fresh_models_dir / "openuni"
    for text in (f"OpenUni checkpoint: {root / RELEASED_B}", "wusize/openuni",
                 f"InternVL3: {root / 'mllm' / 'InternVL3-1B'}", "OpenGVLab/InternVL3-1B",
                 "Efficient-Large-Model/Sana_600M_512px_diffusers", "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers",
                 "download_missing"):
        assert text in msg
    assert no_network == []
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))  # nothing written


def test_downloads_write_only_known_repos_inside_the_models_folder(env, fresh_models_dir, monkeypatch):
    """download_missing on: only the variant's known repos and files, every target inside models/openuni; a
    download interrupted part-way leaves nothing that looks like a finished checkpoint."""
    import huggingface_hub

    calls, fail = [], {"on": True}
    root = (fresh_models_dir / "openuni").resolve()

    def hf_hub_download(repo_id, filename, local_dir=None, **kw):
        calls.append((repo_id, filename, Path(local_dir).resolve(), kw))
        # huggingface_hub writes under .cache/huggingface/download/… and renames when complete
        partial = Path(local_dir) / ".cache" / "huggingface" / "download" / f"{filename}.etag.incomplete"
        partial.parent.mkdir(parents=True, exist_ok=True)
        if fail["on"]:
            partial.write_bytes(b"half")
            raise ConnectionError("connection reset")
        shutil.copy(env.tiny_b.checkpoint, Path(local_dir) / filename)
        return str(Path(local_dir) / filename)

    def snapshot_download(repo_id, local_dir=None, allow_patterns=None, **kw):
        calls.append((repo_id, tuple(allow_patterns), Path(local_dir).resolve(), kw))
        src = {"OpenGVLab/InternVL3-1B": env.tiny_b.mllm_original, "Efficient-Large-Model/Sana_600M_512px_diffusers":
               env.tiny_b.sana, "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers": env.tiny_b.vae}[repo_id]
        shutil.copytree(src, local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    args = dict(B, checkpoint=RELEASED_B, mllm="auto", sana="auto", vae="auto", download_missing=True)
    with pytest.raises(core("errors").MissingModelFilesError,
                       match=r"(?s)Download failed \(ConnectionError.*wusize/openuni"):
        env.call("OpenUniModelLoader", **args)
    assert not (root / RELEASED_B).exists()  # only the .incomplete file, which no listing shows
    assert RELEASED_B not in sys.modules[f"{PACK}.nodes.model_files"].list_checkpoints()
    with pytest.raises(core("errors").MissingModelFilesError, match=r"OpenUni checkpoint: .*" + re.escape(RELEASED_B)):
        env.call("OpenUniModelLoader", **{**args, "download_missing": False})
    fail["on"] = False
    m = env.call("OpenUniModelLoader", **args)[0]
    assert m.variant.name == "tiny-B"
    known = {"wusize/openuni", "OpenGVLab/InternVL3-1B", "Efficient-Large-Model/Sana_600M_512px_diffusers",
             "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"}
    assert {c[0] for c in calls} == known
    for repo, what, target, kw in calls:
        assert target == root or root in target.parents, f"{repo} written to {target}"
        assert "trust_remote_code" not in kw
        if repo == "wusize/openuni":
            assert what == RELEASED_B
        else:
            assert what and not any(p in ("*", "**", "**/*", "*.*") for p in what), what  # never a whole repo


def test_an_interrupted_folder_download_is_resumed(env, fresh_models_dir, monkeypatch):
    import huggingface_hub

    fetched = []

    def snapshot_download(repo_id, local_dir=None, allow_patterns=None, **kw):
        fetched.append(repo_id)
        if len(fetched) == 1:  # the first folder breaks off part-way
            partial = Path(local_dir) / ".cache" / "huggingface" / "download" / "model.safetensors.etag.incomplete"
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(b"half")
            raise ConnectionError("connection reset")
        src = {"OpenGVLab/InternVL3-1B": env.tiny_b.mllm_original, "Efficient-Large-Model/Sana_600M_512px_diffusers":
               env.tiny_b.sana, "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers": env.tiny_b.vae}[repo_id]
        shutil.copytree(src, local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, filename, local_dir=None, **kw: shutil.copy(env.tiny_b.checkpoint,
                                                                                    Path(local_dir) / filename))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    args = dict(B, checkpoint=RELEASED_B, mllm="auto", sana="auto", vae="auto", download_missing=True)
    with pytest.raises(core("errors").MissingModelFilesError, match="Download failed"):
        env.call("OpenUniModelLoader", **args)
    m = env.call("OpenUniModelLoader", **args)[0]  # the retry fetches the broken-off folder again
    assert m.variant.name == "tiny-B" and fetched.count("OpenGVLab/InternVL3-1B") == 2


NO_NETWORK_SCRIPT = r"""
import json, socket, sys
from pathlib import Path
attempts = []
def refuse(*a, **k):
    attempts.append(repr(a[:2])[:200])
    raise OSError("network disabled by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.getaddrinfo = socket.create_connection = refuse
sys.path.insert(0, sys.argv[1])
from comfy_pack import FakeComfy, load_pack
FakeComfy(Path(sys.argv[2])).install()
pack = load_pack("openuni_offline")
specs = {name: cls.INPUT_TYPES() for name, cls in pack.NODE_CLASS_MAPPINGS.items()}
workflows = sorted(Path(sys.argv[3]).rglob("*.json"))
for path in workflows:
    data = json.loads(path.read_text(encoding="utf-8"))
    nodes = data.values() if "nodes" not in data else [
        {"class_type": n["type"], "inputs": {}} for n in data["nodes"]]
    for node in nodes:
        spec = specs.get(node["class_type"])
        if spec is None:
            continue
        for section in spec.values():
            for name, (kind, *opts) in section.items():
                value = node["inputs"].get(name)
                model_pick = name in ("checkpoint", "mllm", "sana", "vae", "lora_name")  # files this folder lacks
                if isinstance(kind, list) and isinstance(value, str) and not model_pick:
                    assert value in kind, (path.name, name, value, kind)
print(json.dumps({"attempts": attempts, "workflows": len(workflows), "nodes": sorted(specs)}))
"""


def test_import_and_loading_workflows_touch_no_network(tmp_path):
    """A fresh Python: sockets and name lookups refused; import the pack, describe every node, read and check
    every example workflow. Nothing tries to connect (HF_HUB_OFFLINE is unset so nothing is masked)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = ""
    out = subprocess.run([sys.executable, "-c", NO_NETWORK_SCRIPT, str(Path(__file__).parent), str(tmp_path),
                          str(ROOT / "example_workflows")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["attempts"] == [] and result["workflows"] >= 16 and len(result["nodes"]) == 13


def test_no_code_runs_from_model_files_anywhere_in_the_source():
    """Static guard: every torch.load is weights_only=True, and trust_remote_code is never switched on."""
    sources = [p for d in ("nodes", "openuni_core") for p in (ROOT / d).glob("*.py")]
    sources.append(ROOT / "__init__.py")
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for call in re.finditer(r"torch\.load\((.*)", text):
            assert "weights_only=True" in call.group(1), f"{path.name}: {call.group(0)}"
        assert not re.search(r"trust_remote_code\s*=\s*True", text), path.name
        assert not re.search(r"\bpickle\.loads?\(", text), path.name


# ----- property-based: sampler and caption node inputs ---------------------------------------------------------

SIZES = st.sampled_from([0, 16, 31, 32, 64, 100, 500, 10000, -32]) | st.integers(-40, 160)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(width=SIZES, height=SIZES, steps=st.sampled_from([0, 1001, -1]) | st.integers(1, 3),
       cfg=st.floats(-2, 12) | st.sampled_from([NAN, INF, -INF, 101.0]),
       denoise=st.floats(-0.5, 1.5) | st.sampled_from([NAN, 0.0, 1.0]),
       batch=st.integers(-1, 3) | st.just(65), seed=st.integers(0, 2**64 - 1) | st.sampled_from([0, 2**64 - 1]),
       sampler=st.sampled_from(["dpmpp", "euler", "bogus"]), with_latent=st.booleans())
@example(width=64, height=32, steps=2, cfg=4.5, denoise=0.3, batch=2, seed=2**64 - 1, sampler="euler", with_latent=False)
@example(width=0, height=-32, steps=3, cfg=0.0, denoise=0.5, batch=65, seed=0, sampler="dpmpp", with_latent=True)
def test_sampler_node_inputs_property(g, width, height, steps, cfg, denoise, batch, seed, sampler, with_latent):
    """Refused exactly when an input that counts is outside the published limits (with a latent, its size and
    batch decide and width/height/batch_size are ignored; without one, denoise is ignored); accepted inputs give a
    float32 LATENT of the right shape. Guards against the node refusing valid input (e.g. `if sampler not in
    SAMPLERS:` → `if True:` in the engine's check_settings) and against checking ignored widgets."""
    init = latent(1, 32, 2, 2) if with_latent else None
    if with_latent:
        valid = valid_sampling(steps=steps, cfg=cfg, sampler=sampler, denoise=denoise)
    else:
        valid = valid_sampling(steps=steps, cfg=cfg, sampler=sampler, width=width, height=height, batch=batch)
    try:
        (out,) = g.sample(width=width, height=height, steps=steps, cfg=cfg, denoise=denoise, batch_size=batch,
                          seed=seed, sampler=sampler, latent=init)
    except core("errors").OpenUniError:
        assert not valid, "a valid input was refused"
        return
    assert valid, "an invalid input was accepted"
    samples = out["samples"]
    expected = (1, 32, 2, 2) if with_latent else (batch, 32, height // 32, width // 32)
    assert samples.shape == expected and samples.dtype == torch.float32


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(question=st.text(max_size=30) | st.sampled_from(["What?\nWhere?", " \n\n", "a\r\nb\n"]), tiles=st.integers(1, 4) | st.sampled_from([0, -1, 41]),
       tokens=st.integers(1, 3) | st.sampled_from([0, -1, 8193]),
       temperature=st.floats(-1, 6) | st.sampled_from([NAN, INF, 1e-300, 0.0]), seed=st.integers(0, 2**64 - 1),
       h=st.integers(0, 40), w=st.integers(1, 40), c=st.sampled_from([1, 2, 3, 4]), batch=st.integers(0, 2))
@example(question="What is it?", tiles=1, tokens=2, temperature=0.0, seed=0, h=40, w=3, c=4, batch=2)
@example(question="", tiles=4, tokens=1, temperature=5.0, seed=2**64 - 1, h=1, w=40, c=1, batch=1)
def test_caption_node_inputs_property(g, question, tiles, tokens, temperature, seed, h, w, c, batch):
    """Refused exactly when an input is outside the published limits (settings, an empty batch or image, 2
    channels; a question that may spell a control token may go either way); accepted inputs give one text per
    image, also shown on the node. Guards against refusing valid input (e.g. `if not isinstance(max_tiles, int) or
    not 1 <= max_tiles <= MAX_TILES:` → `if True:` in chat.check_settings)."""
    valid = (valid_caption(max_tiles=tiles, max_new_tokens=tokens, temperature=temperature)
             and batch >= 1 and h >= 1 and c in (1, 3, 4))
    try:
        out = g.caption(torch.rand(batch, h, w, c), question=question, max_tiles=tiles, max_new_tokens=tokens,
                        temperature=temperature, seed=seed)
    except core("errors").OpenUniError:
        assert not valid or may_hold_control_token(question), "a valid input was refused"
        return
    assert valid, "an invalid input was accepted"
    answers = out["result"][0]
    # One question per line that has printable text (control characters are dropped); none: one default question.
    lines = [line for line in question.split("\n") if any(ch.isprintable() and not ch.isspace() for ch in line)]
    assert len(answers) == batch * max(1, len(lines))
    assert all(isinstance(a, str) for a in answers) and out["ui"]["text"] == answers


def test_a_bad_file_choice_keeps_the_working_model_cached(env, g):
    """A mismatched file choice is refused without touching the loaded model: the next valid prompt needs no reload
    (the same model object comes back while ComfyUI holds it)."""
    good = g.load()[0]
    with pytest.raises(core("errors").OpenUniError, match="Mismatched models"):
        g.load(mllm="InternVL3-tiny-L")
    assert g.load()[0] is good
