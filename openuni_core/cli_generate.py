"""`generate` (text or image → image) and `demo` (the same on tiny random models, offline)."""

from __future__ import annotations

import time
from pathlib import Path

from .cli_common import (STATUS, add_device_flags, add_model_flags, check_devices, pixels, refuse, say, to_image,
                         verb, write)
from .options import (ATTENTION_KERNELS, DEFAULT_CFG, DEFAULT_EDIT_NEGATIVE, DEFAULT_NEGATIVE, DEFAULT_SAMPLER,
                      DEFAULT_SEED, DEFAULT_STEPS, DEFAULT_STRENGTH, DEFAULT_VARIANT, MAX_BATCH, MAX_STEPS,
                      MEMORY_POLICIES, SAMPLERS, SEED_MAX, SPATIAL_COMPRESSION)


def add_generate(sub) -> None:
    g = verb(sub, "generate", "text (or image) → image", cmd_generate)
    add_model_flags(g)
    t = g.add_argument_group("what to draw")
    t.add_argument("--prompt", required=True, metavar="TEXT", help="what to draw (required; not empty)")
    t.add_argument("--negative", metavar="TEXT",
                   help=f"what to steer away from; needs --cfg other than 1 (default: the model's own "
                        f"'{DEFAULT_NEGATIVE}', with --edit-image '{DEFAULT_EDIT_NEGATIVE}')")
    t.add_argument("--image", metavar="FILE",
                   help="image-to-image: start from this image, kept at its size centre-cropped to multiples of 32, "
                        "or scaled and cropped to --width/--height (default: none)")
    t.add_argument("--strength", type=float, metavar="F",
                   help=f"with --image: how much of it is re-drawn, above 0 up to 1 (default: {DEFAULT_STRENGTH} "
                        "with --image)")
    t.add_argument("--edit-image", metavar="FILE",
                   help="EXPERIMENTAL editing: condition on this image, with --prompt as the instruction "
                        "(default: none)")
    s = g.add_argument_group("sampling")
    for side in ("width", "height"):
        s.add_argument(f"--{side}", type=int, metavar="PX",
                       help=f"image {side} in pixels, a multiple of {SPATIAL_COMPRESSION} (default: the variant's, "
                            "512 or 1024; with --image, the image's)")
    s.add_argument("--steps", type=int, metavar="N", default=DEFAULT_STEPS, help=f"sampling steps, 1 to {MAX_STEPS}")
    s.add_argument("--cfg", type=float, metavar="F", default=DEFAULT_CFG,
                   help="guidance scale, 0 to 100; 1 turns guidance off")
    s.add_argument("--seed", type=int, metavar="N", default=DEFAULT_SEED,
                   help=f"noise seed, 0 to {SEED_MAX} (the noise is drawn on the CPU, so a seed gives the same image on any "
                        "device)")
    s.add_argument("--sampler", choices=list(SAMPLERS), default=DEFAULT_SAMPLER,
                   help="; ".join(f"{k}: {v}" for k, v in SAMPLERS.items()))
    s.add_argument("--batch", type=int, metavar="N", default=1, help=f"images from the prompt, 1 to {MAX_BATCH}")
    add_device_flags(g)
    h = g.add_argument_group("memory and speed")
    h.add_argument("--mllm-device", metavar="DEVICE",
                   help="device for InternVL3, e.g. cpu while SANA runs on cuda (default: --device)")
    h.add_argument("--offload", choices=MEMORY_POLICIES, default="none",
                   help="none keeps every part on its device; mllm keeps InternVL3 in CPU RAM and streams it in to "
                        "encode; sequential does the same for SANA and DC-AE")
    h.add_argument("--attention", choices=ATTENTION_KERNELS, default="auto",
                   help="LLM attention kernel; auto = flash_attention_2 where flash-attn is installed on CUDA, "
                        "else sdpa")
    h.add_argument("--compile", action="store_true",
                   help="torch.compile the SANA transformer (the first run per size pays the compilation)")
    o = g.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="FILE",
                   help="image file to write, .png, .jpg, …; a batch writes NAME_00.png, NAME_01.png, … (required)")
    o.add_argument("--save-latents", metavar="FILE",
                   help="also write the final latents (DC-AE's own, unscaled) to this .safetensors file "
                        "(default: not written)")
    o.add_argument("--overwrite", action="store_true",
                   help="replace output files that exist; without it an existing file stops the run before any work")


def cmd_generate(args) -> int:
    from . import cli_checks as checks
    from .sampling import check_settings

    paths_given = all(getattr(args, n) for n in ("checkpoint", "mllm", "sana", "vae"))
    refuse([
        (args.strength is not None and not args.image,
         "--strength applies only to --image (image-to-image); add --image or remove --strength."),
        (args.image and args.edit_image, "Use --image (image-to-image) or --edit-image (editing), not both."),
        (args.negative and args.cfg == 1.0,
         "--negative has no effect with --cfg 1 (guidance off); remove it or raise --cfg."),
        (args.variant and not args.models_dir, "--variant applies only to --models-dir; add --models-dir DIR or "
                                               "remove --variant."),
        (args.download and not args.models_dir, "--download fetches into --models-dir and never into the paths you "
                                                "give; add --models-dir DIR or remove --download."),
        (args.models_dir and paths_given, "--models-dir has no effect: --checkpoint, --mllm, --sana and --vae are "
                                          "all given; remove it (or some of them)."),
    ])
    strength = args.strength if args.strength is not None else (DEFAULT_STRENGTH if args.image else 1.0)
    refuse([(not 0 < strength <= 1, f"--strength {strength} is not allowed: it must be above 0 and at most 1."),
            (0 < strength < 1 and int(args.steps * strength) < 1,
             f"--strength {strength} leaves no step to run out of --steps {args.steps}; raise --strength or --steps.")])
    settings = dict(steps=args.steps, cfg=args.cfg, sampler=args.sampler, batch_size=args.batch, strength=strength,
                    seed=args.seed)
    check_settings(width=args.width, height=args.height, **settings)
    outputs = checks.Outputs()
    pictures = outputs.add("--out", args.out, checks.image_suffixes(), "an image file", count=args.batch,
                           overwrite=args.overwrite)
    latents_file = (outputs.add("--save-latents", args.save_latents, (".safetensors",), "a latents file",
                                overwrite=args.overwrite)[0] if args.save_latents else None)
    check_devices(args.device, args.mllm_device, args.dtype, args.attention)
    width, height, init, edit = args.width, args.height, None, None
    if args.image:
        init, width, height = checks.init_image(args.image, width, height, say)
    if args.edit_image:
        edit = checks.read_image("--edit-image", args.edit_image)
    files = checks.model_files(*model_paths(args))
    width, height = width or files.variant.pixels, height or files.variant.pixels
    check_settings(width=width, height=height, **settings)
    texts = checks.prompt_rules(files.mllm_info)
    if edit is not None:
        texts.instruction(args.prompt, "prompt")
        texts.instruction(args.negative or DEFAULT_EDIT_NEGATIVE, "negative prompt")
    else:
        texts.prompts(args.prompt)
        texts.negative(args.negative)
    outputs.prepare()

    model = load(args, files.paths)
    t0 = time.perf_counter()
    init_latents = model.encode_images(pixels(init)) if init is not None else None
    if edit is not None:
        positive = model.encode_edit(edit, args.prompt, "prompt")
        negative = (model.encode_edit(edit, args.negative or DEFAULT_EDIT_NEGATIVE, "negative prompt")
                    if args.cfg != 1.0 else None)
    elif args.cfg != 1.0:
        positive, negative = model.encode_pair(args.prompt, args.negative)
    else:
        positive, negative = model.encode_prompt(args.prompt), None
    latents = model.sample(positive, negative, width=width, height=height, init_latents=init_latents,
                           progress=lambda i, n: STATUS.show(f"step {i}/{n}"), **settings)
    STATUS.end()
    if latents_file is not None:
        from safetensors.torch import save_file

        write(latents_file, lambda: save_file({"latents": latents.contiguous()}, str(latents_file)))
    for image, path in zip(model.decode(latents), pictures):
        write(path, lambda: to_image(image).save(path))
    say(f"saved {', '.join(map(str, pictures))} in {time.perf_counter() - t0:.1f}s")
    return 0


def model_paths(args):
    """(files.ModelPaths, how to fetch missing files here): explicit paths, or --models-dir's layout for --variant
    (fetching what is missing first, with --download)."""
    from .errors import OpenUniError
    from .files import Layout, ModelPaths, download_variant
    from .variants import VARIANTS

    if not args.models_dir:
        unset = [f"--{n}" for n in ("checkpoint", "mllm", "sana") if not getattr(args, n)]
        if unset:
            raise OpenUniError(f"Give {', '.join(unset)}, or --models-dir DIR to take them from the standard layout.")
        return ModelPaths(Path(args.checkpoint), Path(args.mllm), Path(args.sana),
                          Path(args.vae) if args.vae else None), None
    released = [n for n, v in VARIANTS.items() if not v.test_only]
    name = args.variant or DEFAULT_VARIANT
    if name not in released:
        raise OpenUniError(f"--variant {name} is not a released variant; choose one of {', '.join(released)}.")
    variant, layout = VARIANTS[name], Layout(Path(args.models_dir).expanduser())
    paths = ModelPaths(Path(args.checkpoint) if args.checkpoint else layout.checkpoint(variant.checkpoints[-1]),
                       Path(args.mllm or layout.mllm(variant.mllm_repo)),
                       Path(args.sana or layout.sana(variant.sana_repo)), Path(args.vae or layout.vae()))
    if args.download:
        download_variant(variant, layout, paths.checkpoint.name, mllm=paths.mllm, sana=paths.sana, vae=paths.vae,
                         log=say)
        return paths, None
    return paths, "add --download to fetch them into --models-dir"


def load(args, paths):
    from .loading import load_openuni

    model = load_openuni(paths.checkpoint, paths.mllm, paths.sana, paths.vae, dtype=args.dtype, device=args.device,
                         mllm_device=args.mllm_device, offload=args.offload, attention=args.attention, log=say)
    if args.compile:
        import torch

        model.denoiser = torch.compile(model.transformer)  # shares the weights; the first run per size compiles
    return model



# ----- demo -------------------------------------------------------------------------------------------------------
def add_demo(sub) -> None:
    d = verb(sub, "demo", "generate, edit and caption with tiny random models written on the spot (offline; the "
                          "images are noise-like by design)", cmd_demo)
    d.add_argument("--out", default="openuni_demo", metavar="DIR",
                   help="folder for the tiny models and the demo's images (its demo files are replaced on every run)")
    add_device_flags(d, default_device="cpu")


def cmd_demo(args) -> int:
    from . import cli_checks as checks
    from .loading import load_openuni
    from .tiny import write_tiny_models

    out = Path(args.out).expanduser()
    refuse([(out.exists() and not out.is_dir(), f"--out {args.out} is a file; the demo writes into a folder.")])
    outputs = checks.Outputs()
    shots = [outputs.add("--out", str(out / name), (".png",), "the demo", overwrite=True)[0]
             for name in ("demo_generate.png", "demo_edit.png")]
    check_devices(args.device, None, args.dtype, "auto")
    outputs.prepare()
    say(f"[demo] writing tiny random models to {out / 'models'} (no download)")
    tiny = write_tiny_models(out / "models")
    model = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype=args.dtype,
                         device=args.device)
    say(f"[demo] loaded: {model.report}")
    image = model.generate("a red fox in the snow", width=128, height=96, steps=4, cfg=4.5, seed=42)
    write(shots[0], lambda: to_image(image[0]).save(shots[0]))
    edited = model.decode(model.sample(model.encode_edit(image[0], "make it blue"),
                                       model.encode_edit(image[0], DEFAULT_EDIT_NEGATIVE),
                                       width=128, height=96, steps=4, cfg=4.5, seed=7))
    write(shots[1], lambda: to_image(edited[0]).save(shots[1]))
    text = model.caption(image[0], max_new_tokens=16)
    print(f"[demo] generate → {shots[0]}\n[demo] edit → {shots[1]}\n"
          f"[demo] caption (random model, so gibberish) → {text!r}")
    return 0
