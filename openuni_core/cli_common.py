"""What every command-line verb shares: the progress line and messages on stderr, the refusal of flags that would
be ignored, the parser's one-line errors and help format, the flag groups, and writing results.

A verb module builds its subparser with `verb()` and these flag helpers; cli.main runs it (see cli.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import (DEFAULT_CAPTION_SEED, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_TILES, DEFAULT_TEMPERATURE,
                      DEFAULT_VARIANT, MAX_NEW_TOKENS, MAX_TEMPERATURE, MAX_TILES, PRECISIONS)


# ----- what the user sees ---------------------------------------------------------------------------------------
class StatusLine:
    """One progress line on stderr that rewrites itself; `end()` finishes it so the next message gets its own line."""

    def __init__(self):
        self.open = False

    def show(self, text: str) -> None:
        sys.stderr.write(f"\r{text}")
        sys.stderr.flush()
        self.open = True

    def end(self) -> None:
        if self.open:
            sys.stderr.write("\n")
            self.open = False


STATUS = StatusLine()


def say(text: str) -> None:
    """One informational line on stderr (stdout carries only results, such as a caption)."""
    STATUS.end()
    print(text, file=sys.stderr, flush=True)


def refuse(conflicts: list[tuple[bool, str]]) -> None:
    """Flags that would be silently ignored: the first that applies is refused with its message."""
    from .errors import OpenUniError

    for applies, message in conflicts:
        if applies:
            raise OpenUniError(message)


# ----- the parser -------------------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own: usage + message; ours: the same one line as every error
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class Help(argparse.HelpFormatter):
    """Every flag's help ends with its default, unless it already says what happens by default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or action.required or action.default is argparse.SUPPRESS
                or "default" in text):
            return text
        if action.nargs == 0:
            return f"{text} (off by default)"
        return f"{text} (default: %(default)s)"


def verb(sub, name: str, summary: str, func) -> argparse.ArgumentParser:
    v = sub.add_parser(name, help=summary, description=summary, formatter_class=Help)
    v.set_defaults(func=func)
    v.add_argument("--debug", action="store_true", help="print the full traceback of an unexpected error")
    return v


def add_device_flags(p, *, default_device: str = "auto") -> None:
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default=default_device, metavar="DEVICE",
                   help="where the models run: auto (the first GPU, else the CPU), cpu, cuda, cuda:1, …")
    g.add_argument("--dtype", choices=PRECISIONS, default="auto",
                   help="precision; auto = bf16 on GPUs that support it, else fp16, and fp32 on the CPU")


def add_image_answer_flags(p) -> None:
    """What a question about an image needs (caption; a chat verb shares it)."""
    g = p.add_argument_group("answer")
    g.add_argument("--max-tiles", type=int, metavar="N", default=DEFAULT_MAX_TILES,
                   help=f"448×448 tiles the image is cut into, 1 to {MAX_TILES}")
    g.add_argument("--max-new-tokens", type=int, metavar="N", default=DEFAULT_MAX_NEW_TOKENS,
                   help=f"longest answer in tokens, 1 to {MAX_NEW_TOKENS}")
    g.add_argument("--temperature", type=float, metavar="F", default=DEFAULT_TEMPERATURE,
                   help=f"0 answers greedily (the same answer every time); above 0 samples, up to {MAX_TEMPERATURE:g}")
    g.add_argument("--seed", type=int, default=None, metavar="N",
                   help=f"seed for sampling; only with --temperature above 0 (default: {DEFAULT_CAPTION_SEED})")


def add_model_flags(p) -> None:
    g = p.add_argument_group("model files (give the paths, or --models-dir)")
    g.add_argument("--checkpoint", metavar="FILE",
                   help="OpenUni checkpoint file, .pth or .safetensors (default: from --models-dir)")
    g.add_argument("--mllm", metavar="DIR",
                   help="InternVL3 folder, original or -hf format (default: from --models-dir)")
    g.add_argument("--sana", metavar="DIR",
                   help="SANA diffusers folder with transformer/ and scheduler/ (default: from --models-dir)")
    g.add_argument("--vae", metavar="DIR", help="DC-AE folder (default: the SANA folder's vae/, or from --models-dir)")
    g.add_argument("--models-dir", metavar="DIR", help="take the unset paths above from the standard layout under "
                                                       "this folder (README: Model files) (default: none)")
    g.add_argument("--variant", metavar="NAME", help="which variant --models-dir holds: OpenUni-B-512, OpenUni-L-512 "
                                                     f"or OpenUni-L-1024 (default: {DEFAULT_VARIANT}, with "
                                                     "--models-dir only)")
    g.add_argument("--download", action="store_true",
                   help="fetch the variant's missing files into --models-dir with huggingface_hub; nothing is "
                        "downloaded without it")


def check_devices(device: str, mllm_device: str | None, dtype: str, attention: str) -> None:
    """The device, precision and attention choices, checked before any file is read (load_openuni resolves them)."""
    from .devices import resolve_attention, resolve_device, resolve_dtype

    dev = resolve_device(device)
    resolve_dtype(dtype, dev)
    resolve_attention(attention, resolve_device(mllm_device) if mllm_device not in (None, "", "auto") else dev)


def pixels(image):
    """RGB PIL image → [1,H,W,3] float32 in 0..1 (the engine's image layout)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]


def to_image(image):
    """[H,W,3] float in 0..1 → RGB PIL image."""
    import numpy as np
    from PIL import Image

    return Image.fromarray((image.numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8))


def write(path: Path, save) -> None:
    """Run `save`, turning a full disk or a folder that vanished into a one-line error naming the file."""
    from .errors import OpenUniError

    try:
        save()
    except OSError as e:
        raise OpenUniError(f"Cannot write {path}: {e.strerror or e}.") from e
