"""`caption`: caption an image, or answer a question about it, with InternVL3 alone."""

from __future__ import annotations

from .cli_common import STATUS, add_device_flags, add_image_answer_flags, refuse, say, verb
from .options import DEFAULT_CAPTION_SEED, DEFAULT_QUESTION, GREEDY_BELOW


def add_caption(sub) -> None:
    c = verb(sub, "caption", "caption an image, or answer a question about it", cmd_caption)
    c.add_argument("--mllm", required=True, metavar="DIR", help="InternVL3 folder, original or -hf format (required)")
    c.add_argument("--image", required=True, metavar="FILE", help="the image to caption or ask about (required)")
    c.add_argument("--question", metavar="TEXT", help=f"what to ask (default: '{DEFAULT_QUESTION}')")
    add_image_answer_flags(c)
    add_device_flags(c)


def cmd_caption(args) -> int:
    from . import captioning, chat
    from . import cli_checks as checks
    from .answers import Answerer
    from .devices import resolve_device, resolve_dtype
    from .internvl import inspect_internvl_folder, load_internvl

    refuse([(args.seed is not None and args.temperature < GREEDY_BELOW,
             "--seed only matters when sampling; add --temperature above 0 or remove --seed.")])
    chat.check_settings(max_tiles=args.max_tiles, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    image = checks.read_image("--image", args.image)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    info = inspect_internvl_folder(args.mllm)
    tokenizer, context = checks.tokenizer_and_context(info)  # the question is checked before the weights load
    rows = captioning.caption_rows([captioning.single_question(tokenizer, args.question)], 1)
    chat.prepare(tokenizer, context, [image], rows, max_tiles=args.max_tiles, use_thumbnail=info.use_thumbnail)

    say(f"[OpenUni] loading InternVL3 ({info.format} format) from {info.path}")
    mllm, tokenizer, info = load_internvl(info.path, dtype=dtype)
    answerer = Answerer.on_device(mllm, tokenizer, info.use_thumbnail, device, log=say)
    answer = answerer.caption(image, args.question, max_tiles=args.max_tiles, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature,
                              seed=DEFAULT_CAPTION_SEED if args.seed is None else args.seed,
                              progress=lambda i, n: STATUS.show(f"answer: {i}/{n} tokens"))
    STATUS.end()
    print(answer)
    return 0
