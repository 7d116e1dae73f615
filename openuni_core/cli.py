"""Command line: `python -m openuni_core {generate,caption,chat,demo}` (README: Command line).

Every verb runs through `main`, which turns whatever stops it into one line on stderr and an exit status:
OpenUniError (something the user can fix; the message names the fix), a missing or too old package and running
out of RAM → 2, Ctrl-C → 130, anything else → 1 with a request to report it (`--debug` adds the traceback: a user
needs the one line, a bug report needs the trace).
Each verb checks everything cheap before it loads a model (cli_checks.py): flag combinations, output paths,
input images, settings, the model files and its texts against the tokenizer alone.

A verb is an `add_<verb>(subparsers)` function in VERBS (one module per verb, cli_<verb>.py): it builds its
flags with cli_common's helpers (each flag's help says what it does and its default) and sets `func` to the
function that runs it.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from .cli_caption import add_caption
from .cli_chat import add_chat
from .cli_common import STATUS, Parser, say
from .cli_generate import add_demo, add_generate

PROG = "python -m openuni_core"
VERBS = [add_generate, add_caption, add_chat, add_demo]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BaseException as e:  # Ctrl-C included: every way out of a verb ends as one line and a status
        return exit_status(e, debug=args.debug)


def exit_status(e: BaseException, *, debug: bool) -> int:
    """Print the one line for `e` (and, with debug, its traceback first) and return the exit status."""
    STATUS.end()
    if isinstance(e, SystemExit):
        raise e
    if debug:
        traceback.print_exception(type(e), e, e.__traceback__)
    if isinstance(e, KeyboardInterrupt):
        say("interrupted (Ctrl-C)")
        return 130
    errors = sys.modules.get(f"{__package__}.errors")  # not imported yet: then it cannot be one of ours
    if errors is not None and isinstance(e, errors.OpenUniError):
        say(f"error: {e}")
        return 2
    if isinstance(e, ImportError):  # the environment, not a bug: a package missing or older than requirements.txt
        say(f"error: {e}. A package OpenUni needs is missing or too old; install requirements.txt into this Python "
            "(pip install -r requirements.txt).")
        return 2
    if isinstance(e, MemoryError):
        say("error: out of memory (RAM). Try --dtype bf16, a smaller --width/--height or --batch, or a smaller "
            "variant.")
        return 2
    first = (str(e).strip().splitlines() or [""])[0][:300]
    say(f"error: unexpected {type(e).__name__}{': ' + first if first else ''} — this is a bug in OpenUni; please "
        "report it with the output of the same command run with --debug.")
    return 1


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="OpenUni (InternVL3 + SANA): generate images, caption them, or run the "
                                      "offline demo. Each verb has its own --help.")
    sub = p.add_subparsers(dest="verb", required=True, metavar="{" + ",".join(v.__name__[4:] for v in VERBS) + "}")
    for add in VERBS:
        add(sub)
    return p
