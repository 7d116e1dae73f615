"""Command line: `python -m openuni_core {generate,caption,chat,demo}`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .errors import OpenUniError
from .options import (ATTENTION_KERNELS, DEFAULT_CFG, DEFAULT_EDIT_NEGATIVE, DEFAULT_MAX_NEW_TOKENS,
                      DEFAULT_MAX_TILES, DEFAULT_SAMPLER, DEFAULT_SEED, DEFAULT_STEPS, MEMORY_POLICIES, PRECISIONS,
                      SAMPLERS)


def _save_png(images, out: Path) -> list[Path]:
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = out if len(images) == 1 else out.with_name(f"{out.stem}_{i:02d}{out.suffix}")
        Image.fromarray((img.numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def _resolve_paths(args) -> None:
    """--models-dir/--variant fill unset paths from the standard layout; --download fetches missing ones."""
    if not args.models_dir:
        missing = [f"--{n}" for n in ("mllm", "sana", "checkpoint") if not getattr(args, n)]
        if missing:
            raise OpenUniError(f"Give {', '.join(missing)}, or --models-dir (with --variant) to use the standard layout.")
        return
    from .files import Layout, download_variant
    from .variants import VARIANTS

    if args.variant not in VARIANTS or VARIANTS[args.variant].test_only:
        raise OpenUniError(f"--variant must be one of {[n for n, v in VARIANTS.items() if not v.test_only]}.")
    variant, layout = VARIANTS[args.variant], Layout(Path(args.models_dir))
    name = Path(args.checkpoint).name if args.checkpoint else variant.checkpoints[-1]
    if args.download:
        download_variant(variant, layout, name, log=lambda s: print(s, file=sys.stderr))
    args.checkpoint = args.checkpoint or str(layout.checkpoint(name))
    args.mllm = args.mllm or str(layout.mllm(variant.mllm_repo))
    args.sana = args.sana or str(layout.sana(variant.sana_repo))
    args.vae = args.vae or str(layout.vae())


def _load(args):
    from .loading import load_openuni

    _resolve_paths(args)
    model = load_openuni(args.checkpoint, args.mllm, args.sana, args.vae, dtype=args.dtype, device=args.device,
                         mllm_device=getattr(args, "mllm_device", None), offload=getattr(args, "offload", "none"),
                         attention=getattr(args, "attention", "auto"), log=lambda s: print(s, file=sys.stderr))
    if getattr(args, "compile", False):
        import torch

        model.denoiser = torch.compile(model.transformer)  # shares the weights; the first run per size compiles
    return model


def _load_image_tensor(path: str):
    import torch

    from .images import to_pil

    pil = to_pil(path)
    return torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0)[None]


def cmd_generate(args) -> int:
    from .sampling import check_settings

    check_settings(width=args.width, height=args.height, steps=args.steps, cfg=args.cfg, sampler=args.sampler,
                   batch_size=args.batch, strength=args.strength)
    if args.image and args.edit_image:
        raise OpenUniError("Use --image (image-to-image) or --edit-image (editing), not both.")
    for f in (args.image, args.edit_image):
        if f and not Path(f).is_file():
            raise OpenUniError(f"Image not found: {f}")
    model = _load(args)
    t0 = time.perf_counter()
    init = None
    if args.image:
        img = _load_image_tensor(args.image)
        if tuple(img.shape[1:3]) != (args.height, args.width):
            raise OpenUniError(f"--image is {img.shape[2]}×{img.shape[1]} but --width/--height ask for "
                               f"{args.width}×{args.height}; give the image's size.")
        init = model.encode_images(img)
    if args.edit_image:
        positive = model.encode_edit(_load_image_tensor(args.edit_image)[0], args.prompt)
        negative = model.encode_edit(_load_image_tensor(args.edit_image)[0], args.negative or
                                     DEFAULT_EDIT_NEGATIVE) if args.cfg != 1.0 else None
    else:
        if args.cfg != 1.0:
            positive, negative = model.encode_pair(args.prompt, args.negative)
        else:
            positive, negative = model.encode_prompt(args.prompt), None
    latents = model.sample(positive, negative, width=args.width, height=args.height, steps=args.steps, cfg=args.cfg,
                           seed=args.seed, sampler=args.sampler, batch_size=args.batch, init_latents=init,
                           strength=args.strength if init is not None else 1.0,
                           progress=lambda i, n: print(f"\rstep {i}/{n}", end="", file=sys.stderr))
    print(file=sys.stderr)
    if args.save_latents:
        from safetensors.torch import save_file

        Path(args.save_latents).parent.mkdir(parents=True, exist_ok=True)
        save_file({"latents": latents.contiguous()}, args.save_latents)
    paths = _save_png(model.decode(latents), Path(args.out))
    print(f"saved {', '.join(map(str, paths))} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


def cmd_caption(args) -> int:
    from .captioning import check_settings
    from .internvl import load_internvl
    from .devices import resolve_device, resolve_dtype

    check_settings(max_tiles=args.max_tiles, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    if not Path(args.image).is_file():
        raise OpenUniError(f"Image not found: {args.image}")
    from . import captioning

    device = resolve_device(args.device)
    mllm, tokenizer, info = load_internvl(args.mllm, dtype=resolve_dtype(args.dtype, device))
    mllm.to(device)
    print(captioning.caption(mllm, tokenizer, args.image, question=args.question,
                             max_tiles=args.max_tiles, max_new_tokens=args.max_new_tokens,
                             temperature=args.temperature, seed=args.seed, use_thumbnail=info.use_thumbnail))
    return 0


def cmd_chat(args) -> int:
    from . import chat
    from .devices import resolve_device, resolve_dtype
    from .internvl import load_internvl, load_tokenizer

    chat.check_settings(max_tiles=args.max_tiles, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    if args.image and not Path(args.image).is_file():
        raise OpenUniError(f"Image not found: {args.image}")
    tokenizer = load_tokenizer(args.mllm)  # the texts are checked before the weights load
    message, system = chat.check_message(tokenizer, args.message), chat.check_system(tokenizer, args.system)
    device = resolve_device(args.device)
    mllm, tokenizer, info = load_internvl(args.mllm, dtype=resolve_dtype(args.dtype, device))
    mllm.to(device)
    print(chat.chat(mllm, tokenizer, message, [args.image] if args.image else None, system=system,
                    max_tiles=args.max_tiles, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    seed=args.seed, use_thumbnail=info.use_thumbnail)[0])
    return 0


def cmd_demo(args) -> int:
    """Write tiny random models and run generate, edit and caption on them, fully offline."""
    from .loading import load_openuni
    from .tiny import write_tiny_models

    out = Path(args.out)
    print(f"[demo] writing tiny random models to {out} (no download; the images are noise-like by design)")
    tiny = write_tiny_models(out / "models")
    model = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device=args.device)
    print(f"[demo] loaded: {model.report}")
    image = model.generate("a red fox in the snow", width=128, height=96, steps=4, cfg=4.5, seed=42)
    p1 = _save_png(image, out / "demo_generate.png")[0]
    edited = model.decode(model.sample(model.encode_edit(image[0], "make it blue"),
                                       model.encode_edit(image[0], "Keep the image as it is."),
                                       width=128, height=96, steps=4, cfg=4.5, seed=7))
    p2 = _save_png(edited, out / "demo_edit.png")[0]
    text = model.caption(image[0], max_new_tokens=16)
    print(f"[demo] generate → {p1}\n[demo] edit → {p2}\n[demo] caption (random model, so gibberish) → {text!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m openuni_core", description="OpenUni engine (InternVL3 + SANA).")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="text (or image) → image")
    g.add_argument("--mllm", help="InternVL3 folder (original or -hf format)")
    g.add_argument("--sana", help="SANA diffusers folder (transformer/, scheduler/)")
    g.add_argument("--vae", help="DC-AE folder (default: SANA folder's vae/)")
    g.add_argument("--checkpoint", help="OpenUni .pth or .safetensors")
    g.add_argument("--models-dir", help="use the standard layout under this folder (see README) for unset paths")
    g.add_argument("--variant", default="OpenUni-B-512", help="variant for --models-dir / --download")
    g.add_argument("--download", action="store_true",
                   help="fetch missing files of --variant into --models-dir with huggingface_hub (off by default)")
    g.add_argument("--prompt", required=True)
    g.add_argument("--negative", default="")
    g.add_argument("--image", help="image-to-image: start from this image (needs --strength)")
    g.add_argument("--strength", type=float, default=1.0)
    g.add_argument("--edit-image", help="EXPERIMENTAL editing: condition on this image + the prompt as instruction")
    g.add_argument("--width", type=int, default=512)
    g.add_argument("--height", type=int, default=512)
    g.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    g.add_argument("--cfg", type=float, default=DEFAULT_CFG)
    g.add_argument("--seed", type=int, default=DEFAULT_SEED)
    g.add_argument("--sampler", choices=list(SAMPLERS), default=DEFAULT_SAMPLER)
    g.add_argument("--batch", type=int, default=1)
    g.add_argument("--dtype", choices=PRECISIONS, default="auto")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (SANA and DC-AE)")
    g.add_argument("--mllm-device", default=None, help="device for InternVL3 (default: --device)")
    g.add_argument("--offload", choices=MEMORY_POLICIES, default="none")
    g.add_argument("--attention", choices=ATTENTION_KERNELS, default="auto")
    g.add_argument("--compile", action="store_true", help="torch.compile the SANA transformer (slow first run)")
    g.add_argument("--out", required=True, help="output PNG (a batch adds _00, _01 …)")
    g.add_argument("--save-latents", help="also save the final latents as .safetensors")
    g.set_defaults(func=cmd_generate)
    c = sub.add_parser("caption", help="caption an image or answer a question about it")
    c.add_argument("--mllm", required=True)
    c.add_argument("--image", required=True)
    c.add_argument("--question", default="")
    c.add_argument("--max-tiles", type=int, default=DEFAULT_MAX_TILES)
    c.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    c.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--dtype", choices=PRECISIONS, default="auto")
    c.add_argument("--device", default="auto")
    c.set_defaults(func=cmd_caption)
    t = sub.add_parser("chat", help="talk to InternVL3, optionally about an image")
    t.add_argument("--mllm", required=True)
    t.add_argument("--message", required=True)
    t.add_argument("--system", default="", help="system prompt (default: InternVL3's own)")
    t.add_argument("--image", help="an image the message is about")
    t.add_argument("--max-tiles", type=int, default=DEFAULT_MAX_TILES)
    t.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    t.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--dtype", choices=PRECISIONS, default="auto")
    t.add_argument("--device", default="auto")
    t.set_defaults(func=cmd_chat)
    d = sub.add_parser("demo", help="offline demo on tiny random models")
    d.add_argument("--out", default="openuni_demo")
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OpenUniError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
