"""`chat`: talk to InternVL3, optionally about an image, with InternVL3 alone."""

from __future__ import annotations

from .cli_common import STATUS, add_device_flags, add_image_answer_flags, refuse, say, verb
from .options import DEFAULT_CAPTION_SEED, GREEDY_BELOW


def add_chat(sub) -> None:
    c = verb(sub, "chat", "talk to InternVL3, optionally about an image", cmd_chat)
    c.add_argument("--mllm", required=True, metavar="DIR", help="InternVL3 folder, original or -hf format (required)")
    c.add_argument("--message", required=True, metavar="TEXT", help="what to say or ask (required)")
    c.add_argument("--system", default="", metavar="TEXT", help="system prompt (default: InternVL3's own)")
    c.add_argument("--image", metavar="FILE", help="an image the message is about (default: none, a text-only chat)")
    add_image_answer_flags(c)
    add_device_flags(c)


def cmd_chat(args) -> int:
    from . import chat
    from . import cli_checks as checks
    from .answers import Answerer
    from .devices import resolve_device, resolve_dtype
    from .internvl import inspect_internvl_folder, load_internvl

    refuse([(args.seed is not None and args.temperature < GREEDY_BELOW,
             "--seed only matters when sampling; add --temperature above 0 or remove --seed.")])
    chat.check_settings(max_tiles=args.max_tiles, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    images = [checks.read_image("--image", args.image)] if args.image else []
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    info = inspect_internvl_folder(args.mllm)
    tokenizer, context = checks.tokenizer_and_context(info)  # every text is checked before the weights load
    message, system = chat.check_message(tokenizer, args.message), chat.check_system(tokenizer, args.system)
    settings = dict(system=system, max_tiles=args.max_tiles, max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature, seed=DEFAULT_CAPTION_SEED if args.seed is None else args.seed)
    chat.prepare(tokenizer, context, images, chat.message_rows(message, len(images)), use_thumbnail=info.use_thumbnail,
                 **settings)

    say(f"[OpenUni] loading InternVL3 ({info.format} format) from {info.path}")
    mllm, tokenizer, info = load_internvl(info.path, dtype=dtype)
    answerer = Answerer.on_device(mllm, tokenizer, info.use_thumbnail, device, log=say)
    answer = answerer.chat(message, images, **settings, progress=lambda i, n: STATUS.show(f"answer: {i}/{n} tokens"))[0]
    STATUS.end()
    print(answer)
    return 0
