"""The outputs OpenUni must give identically on every library version it supports — for CI's oldest-pins run.

A library bug present on both sides of a comparison hides, so the oldest releases are not compared with their own
pipelines but with what the NEWEST releases computed on byte-identical model files:

    python tests/reference_outputs.py write FILES REFERENCE   # newest releases: write tiny model files + reference
    python tests/reference_outputs.py check FILES REFERENCE   # oldest pins: same FILES (sha256-checked), compare

REFERENCE is one .safetensors file: the tensors, plus texts, token ids, file hashes and library versions in its
metadata. fp32 on the CPU; floats must agree within FLOAT_TOLERANCE, images (uint8), token ids and texts exactly.
`check` prints each output that differs with its largest difference and exits 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from openuni_core.tiny import TinyModels, tiny_paths, write_tiny_models  # noqa: E402

FLOAT_TOLERANCE = 1e-5
PROMPT, NEGATIVE = "a red fox in the snow", ""
LIBRARIES = ("torch", "transformers", "diffusers", "accelerate", "safetensors", "huggingface_hub", "tokenizers",
             "pillow", "numpy")


def pattern(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """A deterministic image [height, width, 3] float32 in 0..1 made with numpy only (no library randomness)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = [0.5 + 0.5 * np.sin(x / 7.0 + seed), 0.5 + 0.5 * np.cos(y / 5.0 + 2 * seed),
           ((x * 31 + y * 17 + seed * 7) % 97) / 96.0]
    return torch.from_numpy(np.stack(rgb, -1).astype(np.float32))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """As the CLI saves images."""
    return torch.from_numpy((images.numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8))


def file_hashes(t: TinyModels) -> dict[str, str]:
    """sha256 of every file the outputs are computed from, by path relative to the set's root."""
    files = [t.checkpoint, t.checkpoint_safetensors]
    for folder in (t.mllm_original, t.mllm_hf, t.sana, t.vae):
        files += [p for p in folder.rglob("*") if p.is_file()]
    return {str(p.relative_to(t.root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}


def _caption(model, image, **kwargs) -> tuple[str, torch.Tensor]:
    """The caption text and the generated token ids (captured from transformers' generate)."""
    seen = []
    generate = model.mllm.generate

    def spy(*a, **k):
        out = generate(*a, **k)
        # from input embeddings alone (the engine's batched chat) generate returns the new tokens only
        seen.append((out[0, k["input_ids"].shape[1]:] if "input_ids" in k else out[0]).cpu())
        return out

    model.mllm.generate = spy
    try:
        text = model.caption(image, "Describe this image.", max_new_tokens=12, **kwargs)
    finally:
        del model.mllm.generate
    return text, seen[-1]


def compute(t: TinyModels) -> dict:
    """Every version-sensitive output of the engine on the set `t`: name → tensor, or text."""
    from openuni_core.chat import conversation
    from openuni_core.images import caption_pixel_values, to_pil
    from openuni_core.loading import load_openuni

    out: dict = {}
    orig = load_openuni(t.checkpoint, t.mllm_original, t.sana, t.vae, dtype="fp32", device="cpu")
    hf = load_openuni(t.checkpoint_safetensors, t.mllm_hf, t.sana, t.vae, dtype="fp32", device="cpu")
    pos, neg = orig.encode_pair(PROMPT, NEGATIVE)
    out["conditioning/original/positive"], out["conditioning/original/negative"] = pos.embeds, neg.embeds
    out["conditioning/hf/positive"] = hf.encode_pair(PROMPT, NEGATIVE)[0].embeds
    out["conditioning/edit"] = orig.encode_edit(pattern(160, 120, 1), "make it blue").embeds
    kw = dict(width=128, height=96, steps=4, cfg=4.5, seed=42)
    for sampler in ("dpmpp", "euler"):
        out[f"latents/{sampler}"] = orig.sample(pos, neg, sampler=sampler, **kw)
    init = orig.encode_images(pattern(128, 96, 2)[None])
    out["vae/encode"] = init
    out["latents/img2img"] = orig.sample(pos, neg, init_latents=init, strength=0.6, **kw)
    out["image/dpmpp_uint8"] = to_uint8(orig.decode(out["latents/dpmpp"]))
    for name, model in (("original", orig), ("hf", hf)):
        out[f"caption/{name}/greedy_text"], out[f"caption/{name}/greedy_ids"] = _caption(model, pattern(160, 120, 1))
    out["caption/original/sampled_text"], out["caption/original/sampled_ids"] = _caption(
        orig, pattern(160, 120, 1), temperature=0.7, seed=3)
    pixels = caption_pixel_values(to_pil(pattern(160, 120, 1)), 2, True)
    ids = torch.tensor([orig.tokenizer(conversation("Describe this image.", pixels.shape[0])).input_ids])
    with torch.no_grad():
        out["caption/logits"] = orig.mllm(input_ids=ids, attention_mask=torch.ones_like(ids),
                                          pixel_values=pixels).logits[0, -4:]
    out["image/tall_caption_pixels"] = caption_pixel_values(to_pil(pattern(90, 500, 9)), 6, True)  # Pillow's resize
    return out


def versions() -> dict[str, str]:
    import importlib.metadata as md

    return {p: md.version(p) for p in LIBRARIES}


def save(path: Path, outputs: dict, hashes: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in outputs.items() if isinstance(v, torch.Tensor)}
    texts = {k: v for k, v in outputs.items() if not isinstance(v, torch.Tensor)}
    meta = {"texts": json.dumps(texts), "files_sha256": json.dumps(hashes), "versions": json.dumps(versions())}
    save_file(tensors, str(path), metadata=meta)


def load(path: Path) -> tuple[dict, dict[str, str], dict[str, str]]:
    """(outputs, file hashes, library versions) from a reference file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    outputs = {**load_file(str(path)), **json.loads(meta["texts"])}
    return outputs, json.loads(meta["files_sha256"]), json.loads(meta["versions"])


def compare(reference: dict, got: dict) -> list[str]:
    """One line per output of `reference` that `got` lacks or does not match (floats within FLOAT_TOLERANCE, the
    rest exactly), naming the output and the largest difference."""
    bad = []
    for name, want in reference.items():
        have = got.get(name)
        if have is None:
            bad.append(f"{name}: missing")
        elif not isinstance(want, torch.Tensor):
            if have != want:
                bad.append(f"{name}: {have!r} instead of {want!r}")
        elif not isinstance(have, torch.Tensor) or have.shape != want.shape or have.dtype != want.dtype:
            bad.append(f"{name}: {getattr(have, 'dtype', type(have))} {list(getattr(have, 'shape', []))} instead of "
                       f"{want.dtype} {list(want.shape)}")
        else:
            diff = (have.double() - want.double()).abs().max().item() if want.numel() else 0.0
            if diff > (FLOAT_TOLERANCE if want.is_floating_point() else 0):
                bad.append(f"{name}: max diff {diff:.3g} (tolerance {FLOAT_TOLERANCE if want.is_floating_point() else 0})")
    return bad


def check(files: Path, reference: Path) -> list[str]:
    """Compute the outputs on the files under `files` and compare them with `reference`; the problems, or []."""
    t = tiny_paths(files)
    want, hashes, _ = load(reference)
    have = file_hashes(t)
    changed = sorted(k for k in hashes.keys() | have.keys() if hashes.get(k) != have.get(k))
    if changed:
        return [f"model files differ from the reference's: {changed[:5]}"]
    return compare(want, compute(t))


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("write", "check"):
        print(__doc__)
        return 2
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    files, reference = Path(argv[1]), Path(argv[2])
    if argv[0] == "write":
        t = write_tiny_models(files, "tiny-B", seed=0)
        save(reference, compute(t), file_hashes(t))
        print(f"wrote {reference} ({json.dumps(versions())})")
        return 0
    problems = check(files, reference)
    label = " ".join(f"{k} {v}" for k, v in versions().items())
    ref_label = " ".join(f"{k} {v}" for k, v in load(reference)[2].items())
    for line in problems:
        print(f"DIFFERENT {line}")
    print(f"{'DIFFERENT' if problems else 'SAME'}: {label} against the reference from {ref_label}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
