"""The command line, run as users run it: a subprocess, its real exit status, stdout and stderr.

The table covers every way a command is refused. Each refused case must end with exit status 2 and stderr that is
exactly ONE line ("error: …", never a traceback). One line also proves the refusal came before any model loaded:
loading writes its own lines to stderr first. Cases about outputs, images and flags point the model flags at paths
that do not exist, so they also prove those checks come before the model files are even looked at.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
NOWHERE = ["--checkpoint", "/nonexistent/ckpt.pth", "--mllm", "/nonexistent/mllm", "--sana", "/nonexistent/sana"]


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "openuni_core", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def models(tiny, **swap) -> list[str]:
    paths = {"checkpoint": tiny.checkpoint, "mllm": tiny.mllm_original, "sana": tiny.sana, "vae": tiny.vae, **swap}
    return [a for k, v in paths.items() if v is not None for a in (f"--{k}", str(v))]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Input images and obstacles, made once."""
    d = tmp_path_factory.mktemp("cli_files")
    Image.fromarray((np.random.RandomState(0).rand(375, 500, 3) * 255).astype(np.uint8)).save(d / "photo.png")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(d / "dot.png")
    Image.new("RGB", (5000, 40)).save(d / "banner.png")
    Image.new("RGB", (2000, 2000), (60, 90, 120)).save(d / "big.png")
    (d / "notes.txt").write_text("not an image")
    (d / "a_file").write_text("x")
    (d / "taken.png").write_bytes((d / "dot.png").read_bytes())
    (d / "folder").mkdir()
    return d


# (verb args builder, expected message regex). t = tiny models, f = the files folder.
REFUSED = {
    # -- outputs: checked first, before the (nonexistent) model files -------------------------------------------
    "--out is an existing folder": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "folder"],
                                    r"--out .*folder is a folder; give a file name in it"),
    "--out ends with a slash": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f"{f}/new/"], r"is a folder"),
    "--out without extension": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "picture"],
                                r"has no extension; an image file needs one such as \.png"),
    "--out with an unknown extension": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "x.pngg"],
                                        r"has the extension '\.pngg'"),
    "--out in a folder that cannot be created": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "a_file/x.png"],
                                                 r"cannot create its folder, .*a_file is a file"),
    "--out exists": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "taken.png"],
                     r"taken\.png already exists; choose another name, or add --overwrite"),
    "--save-latents with .pt": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--save-latents",
                                              f / "l.pt"], r"--save-latents .* a latents file needs one such as "
                                                           r"\.safetensors"),
    "--save-latents is a folder": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--save-latents",
                                                 f / "folder"], r"--save-latents .* is a folder"),
    # -- input images -------------------------------------------------------------------------------------------
    "--image missing": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--image", f / "nope.png"],
                        r"--image .*nope\.png: no such file"),
    "--image is a folder": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--image", f / "folder"],
                            r"--image .* is a folder; give an image file"),
    "--image is not an image": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--image",
                                              f / "notes.txt"], r"--image: Cannot read image"),
    "--image 1×1 without a size": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--image",
                                                 f / "dot.png"],
                                   r"is 1×1, smaller than 32×32; give --width and --height to resize it"),
    "--image wider than 4096": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--image",
                                              f / "banner.png"], r"is 5000×40; sides above 4096 .*--width"),
    "--edit-image missing": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--edit-image",
                                           f / "nope.png"], r"--edit-image .*nope\.png: no such file"),
    "--seed below 0": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--seed", -1],
                       r"seed -1 is not allowed: use a whole number from 0 to 18446744073709551615"),
    "--seed above 2^64-1": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--seed", 2**64],
                            r"seed 18446744073709551616 is not allowed"),
    "--strength 0": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--image", f / "photo.png",
                                   "--strength", 0], r"--strength 0\.0 is not allowed: it must be above 0"),
    "--strength leaving no step": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--image",
                                                 f / "photo.png", "--strength", 0.01],
                                   r"--strength 0\.01 leaves no step to run out of --steps 20; raise --strength"),
    # -- flags that would be silently ignored ---------------------------------------------------------------------
    "--strength without --image": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--strength", 0.5],
                                   r"--strength applies only to --image"),
    "--strength with --edit-image": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--strength",
                                                   0.5, "--edit-image", f / "photo.png"],
                                     r"--strength applies only to --image"),
    "--image and --edit-image": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--image",
                                               f / "photo.png", "--edit-image", f / "photo.png"], r"not both"),
    "--negative with --cfg 1": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--negative", "blur",
                                              "--cfg", 1], r"--negative has no effect with --cfg 1"),
    "--variant without --models-dir": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--variant",
                                                     "OpenUni-L-512"], r"--variant applies only to --models-dir"),
    "--download without --models-dir": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png",
                                                      "--download"], r"--download fetches into --models-dir"),
    "--models-dir beside all four paths": (lambda t, f: [*models(t), "--prompt", "x", "--out", f / "o.png",
                                                         "--models-dir", f], r"--models-dir has no effect"),
    "unknown --variant": (lambda t, f: ["--prompt", "x", "--out", f / "o.png", "--models-dir", f, "--variant",
                                        "OpenUni-XL"], r"--variant OpenUni-XL is not a released variant"),
    "no model paths": (lambda t, f: ["--prompt", "x", "--out", f / "o.png"],
                       r"Give --checkpoint, --mllm, --sana, or --models-dir DIR"),
    # -- settings and argparse's own errors -----------------------------------------------------------------------
    "--width 500": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--width", 500],
                    r"width 500 is not allowed: it must be a multiple of 32 .* Try 512"),
    "--steps 0": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--steps", 0], r"steps 0"),
    "--steps not a number": (lambda t, f: [*NOWHERE, "--prompt", "x", "--out", f / "o.png", "--steps", "many"],
                             r"argument --steps: invalid int value: 'many' \(see python -m openuni_core generate"),
    "--prompt missing": (lambda t, f: [*NOWHERE, "--out", f / "o.png"],
                         r"the following arguments are required: --prompt"),
    # -- the model files: which kind was given, which was expected --------------------------------------------------
    "SANA folder as --mllm": (lambda t, f: [*models(t, mllm=t.sana), "--prompt", "x", "--out", f / "o.png"],
                              r"Sana-tiny_diffusers is a SANA diffusers folder .*, but an InternVL3 folder .* is "
                              r"expected here"),
    "SANA folder as --vae": (lambda t, f: [*models(t, vae=t.sana), "--prompt", "x", "--out", f / "o.png"],
                             r"is a SANA diffusers folder .*, but a DC-AE folder .* is expected here"),
    "InternVL3 folder as --sana": (lambda t, f: [*models(t, sana=t.mllm_original), "--prompt", "x", "--out",
                                                 f / "o.png"],
                                   r"is an InternVL3 folder .*, but a SANA diffusers folder .* is expected here"),
    "a folder as --checkpoint": (lambda t, f: [*models(t, checkpoint=t.root), "--prompt", "x", "--out", f / "o.png"],
                                 r"is a folder holding openuni_tiny_b.*, but an OpenUni checkpoint file "
                                 r"\(\.pth or \.safetensors\) is expected here; choose a checkpoint file"),
    # -- texts, checked with the tokenizer alone -------------------------------------------------------------------
    "empty prompt": (lambda t, f: [*models(t), "--prompt", "  ", "--out", f / "o.png"],
                     r"The prompt is empty; write what to draw"),
    "over-long prompt": (lambda t, f: [*models(t), "--prompt", "fox " * 9000, "--out", f / "o.png"],
                         r"The prompt is \d+ tokens long; this model takes at most \d+ tokens for it"),
    "over-long negative": (lambda t, f: [*models(t), "--prompt", "fox", "--negative", "blur " * 9000, "--out",
                                         f / "o.png"],
                           r"The negative prompt is \d+ tokens long; .* Shorten the negative prompt\."),
    "over-long edit instruction": (lambda t, f: [*models(t), "--prompt", "fox " * 9000, "--edit-image",
                                                 f / "photo.png", "--out", f / "o.png"],
                                   r"The prompt is \d+ tokens long; .*Shorten the prompt"),
}

CAPTION_REFUSED = {
    "--seed with greedy decoding": (lambda t, f: ["--mllm", t.mllm_original, "--image", f / "photo.png", "--seed", 3],
                                    r"--seed only matters when sampling"),
    "--image missing": (lambda t, f: ["--mllm", t.mllm_original, "--image", f / "nope.png"], r"no such file"),
    "SANA folder as --mllm": (lambda t, f: ["--mllm", t.sana, "--image", f / "photo.png"],
                              r"is a SANA diffusers folder .*, but an InternVL3 folder .* is expected here"),
    "--max-tiles 0": (lambda t, f: ["--mllm", t.mllm_original, "--image", f / "photo.png", "--max-tiles", 0],
                      r"max_tiles 0 is not allowed"),
    "over-long question": (lambda t, f: ["--mllm", t.mllm_original, "--image", f / "photo.png", "--question",
                                         "fox " * 9000],
                           r"The question is \d+ tokens long; with \d+ image tiles .* Shorten the question"),
    "empty question, the image alone too big": (
        lambda t, f: ["--mllm", t.mllm_original, "--image", f / "big.png", "--max-tiles", 40],
        r"37 image tiles \(9472 tokens\) and \d+ tokens of chat template leave no room .*lower max_tiles"),
}


def assert_one_line_error(r, pattern):
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("case", list(REFUSED))
def test_generate_refuses_with_one_line_before_loading(tiny, files, case):
    """Catches: any check moved after the model load, a message reworded back to the misleading one (e.g. a negative
    called "the prompt", a folder reported as a missing checkpoint), or a silently ignored flag combination
    (deleting its entry in cmd_generate's `refuse` list lets the run go ahead)."""
    make, pattern = REFUSED[case]
    assert_one_line_error(run("generate", "--device", "cpu", *make(tiny, files)), pattern)


@pytest.mark.parametrize("case", list(CAPTION_REFUSED))
def test_caption_refuses_with_one_line_before_loading(tiny, files, case):
    """Catches: the question counted with the system prompt and image tokens (the old "193 tokens" for an empty
    question), the context check moved after loading, or --seed accepted and ignored under greedy decoding."""
    make, pattern = CAPTION_REFUSED[case]
    assert_one_line_error(run("caption", "--device", "cpu", *make(tiny, files)), pattern)


def test_missing_files_hint_names_only_what_works_here(tiny, tmp_path):
    """Explicit paths: --download cannot help, so it is not suggested; --models-dir: it can, so it is. Catches the
    old message, which suggested --download (and the ComfyUI switch) whatever the context."""
    r = run("generate", *models(tiny, checkpoint=tmp_path / "gone.pth"), "--prompt", "x", "--out", tmp_path / "o.png")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "gone.pth" in r.stderr and "--download" not in r.stderr and "download_missing" not in r.stderr
    r = run("generate", "--models-dir", tmp_path / "models", "--prompt", "x", "--out", tmp_path / "o.png")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "OpenGVLab/InternVL3-1B" in r.stderr and "add --download to fetch them into --models-dir" in r.stderr
    assert "download_missing" not in r.stderr and not (tmp_path / "models").exists()


def test_generate_writes_images_latents_and_creates_folders(tiny, tmp_path):
    """Catches: missing parent folders no longer created, a batch not split into NAME_00/NAME_01, latents not saved,
    or an existing output overwritten without --overwrite."""
    out = tmp_path / "new" / "deeper" / "img.png"
    lat = tmp_path / "lat" / "lat.safetensors"
    args = [*models(tiny), "--dtype", "fp32", "--device", "cpu", "--prompt", "a fox", "--width", 96, "--height", 64,
            "--steps", 3, "--seed", 1, "--sampler", "euler", "--batch", 2, "--out", out, "--save-latents", lat]
    r = run("generate", *args)
    assert r.returncode == 0, r.stderr
    made = sorted(out.parent.glob("img_*.png"))
    assert [p.name for p in made] == ["img_00.png", "img_01.png"] and Image.open(made[0]).size == (96, 64)
    assert load_file(str(lat))["latents"].shape == (2, 32, 2, 3)
    before = made[0].read_bytes()
    r = run("generate", *args)
    assert r.returncode == 2 and "img_00.png already exists" in r.stderr and made[0].read_bytes() == before
    assert run("generate", *args, "--overwrite").returncode == 0


def test_img2img_takes_photos_of_any_size(tiny, files, tmp_path):
    """A 500×375 photo is centre-cropped to 480×352 (said in one line) and re-drawn with the documented default
    --strength 0.8 (16 of 20 steps run: the image is used, not silently ignored); with --width/--height it is
    scaled to cover that size and cropped, a 1×1 image too. Catches: the default dropped (20 of 20 steps: the run
    equals text-to-image), the crop or the resize removed, or the note line lost."""
    common = [*models(tiny), "--dtype", "fp32", "--device", "cpu", "--prompt", "bluer", "--steps", 20, "--seed", 3]
    r = run("generate", *common, "--image", files / "photo.png", "--out", tmp_path / "crop.png")
    assert r.returncode == 0, r.stderr
    assert "--image 500×375 is centre-cropped to 480×352" in r.stderr and "step 16/16" in r.stderr
    assert Image.open(tmp_path / "crop.png").size == (480, 352)
    r = run("generate", *common, "--image", files / "photo.png", "--width", 64, "--height", 96, "--strength", 0.5,
            "--out", tmp_path / "sized.png")
    assert r.returncode == 0, r.stderr
    assert "--image 500×375 is scaled to cover 64×96 and centre-cropped" in r.stderr and "step 10/10" in r.stderr
    assert np.asarray(Image.open(tmp_path / "sized.png")).shape == (96, 64, 3)
    r = run("generate", *common, "--image", files / "dot.png", "--width", 64, "--height", 64, "--out",
            tmp_path / "dot.png")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "dot.png").size == (64, 64)


def test_edit_and_caption_run(tiny, files, tmp_path):
    """Catches a broken edit path or caption verb (exit status, the answer on stdout, progress on stderr only)."""
    r = run("generate", *models(tiny), "--dtype", "fp32", "--device", "cpu", "--prompt", "make it blue",
            "--edit-image", files / "photo.png", "--width", 64, "--height", 64, "--steps", 2,
            "--out", tmp_path / "e.png")
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "e.png")).shape == (64, 64, 3)
    r = run("caption", "--mllm", tiny.mllm_hf, "--image", files / "photo.png", "--question", "What?", "--max-tiles", 2,
            "--max-new-tokens", 4, "--temperature", 0.7, "--seed", 5, "--dtype", "fp32", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "answer: 4/4 tokens" in r.stderr and "answer:" not in r.stdout and len(r.stdout.splitlines()) == 1


def interrupt(args, wait_for: bytes | None, after: float = 0.0):
    """Start the CLI, send SIGINT (Ctrl-C) once `wait_for` shows on stderr (or after `after` seconds), return
    (status, stderr). SIGINT is restored to its default in the child, as in a terminal."""
    proc = subprocess.Popen([sys.executable, "-m", "openuni_core", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    if wait_for is None:
        time.sleep(after)
    else:
        while wait_for not in seen:
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, f"the command ended before {wait_for!r}: {seen.decode(errors='replace')}"
            seen += chunk
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    return proc.returncode, (seen + rest).decode(errors="replace")


@pytest.mark.parametrize("when", ["sampling", "captioning", "starting"])
def test_ctrl_c_stops_with_one_line_and_status_130(tiny, files, tmp_path, when):
    """Ctrl-C mid-sampling, mid-answer and while Python still imports torch: one line, exit status 130, no
    traceback, nothing written. Catches the KeyboardInterrupt branch of cli.exit_status removed (a 50-115 line
    traceback and status 1), or torch imported before main's handler (openuni_core/__init__ importing eagerly)."""
    generate = ["generate", *models(tiny), "--device", "cpu", "--prompt", "a fox", "--steps", 1000, "--width", 256,
                "--height", 256, "--out", tmp_path / "never.png"]
    status, err = {
        "sampling": lambda: interrupt(generate, b"step 2/1000"),
        "captioning": lambda: interrupt(["caption", "--mllm", tiny.mllm_original, "--image", files / "photo.png",
                                         "--max-new-tokens", 8000, "--device", "cpu"], b"answer: 2/"),
        "starting": lambda: interrupt(generate, None, after=1.5),
    }[when]()
    # A shell reports 130 both for exit status 130 and for a process ended by SIGINT itself (-2 here): under heavy
    # load a Ctrl-C can land while the interpreter is still starting or already finalising, after the one line.
    assert status in (130, -signal.SIGINT) and "Traceback" not in err, err
    assert err.splitlines()[-1].split("\r")[-1] == "interrupted (Ctrl-C)"
    assert not (tmp_path / "never.png").exists()


BROKEN_VERB = """
import sys
from openuni_core import cli, cli_common
def fail(args):
    raise {error}
def add_broken(sub):
    cli_common.verb(sub, "broken", "raises what no check foresaw", fail)
cli.VERBS.append(add_broken)
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("error, status, line", [
    ("KeyError('missing key')", 1, r"error: unexpected KeyError: 'missing key' — this is a bug in OpenUni; please "
                                   r"report it with the output of the same command run with --debug\."),
    ("ImportError('cannot import name InternVLConfig from transformers')", 2,
     r"error: cannot import name InternVLConfig from transformers\. A package OpenUni needs is missing or too old; "
     r"install requirements\.txt"),
    ("MemoryError()", 2, r"error: out of memory \(RAM\)\. Try --dtype bf16"),
])
def test_other_errors_are_one_line_and_debug_shows_the_trace(error, status, line):
    """Any verb (here one registered the way a new verb plugs in) that hits an exception no check foresaw: one line
    naming it and asking for a report, exit status 1; a missing or too old package and running out of RAM are the
    user's to fix (status 2, saying how); --debug adds the traceback. Catches a verb run outside main's handler, or
    one of exit_status's branches removed."""
    script = BROKEN_VERB.format(error=error)
    r = subprocess.run([sys.executable, "-c", script, "broken"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == status and "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert re.match(line, r.stderr.strip()), r.stderr
    r = subprocess.run([sys.executable, "-c", script, "broken", "--debug"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == status and "Traceback" in r.stderr and re.match(line, r.stderr.splitlines()[-1])


def test_every_flag_of_every_verb_says_what_it_does_and_its_default():
    """Catches a flag added without help, or without its default (or 'required') in the help text."""
    from openuni_core.cli import build_parser
    from openuni_core.cli_common import Help

    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert set(verbs) >= {"generate", "caption", "demo"}
    for name, sub in verbs.items():
        formatter = Help(name)
        for action in sub._actions:
            if not action.option_strings or action.option_strings == ["-h", "--help"]:
                continue
            text = formatter._get_help_string(action) % {"default": action.default}
            assert "\n" not in text and len(text.split()) >= 4, (name, action.option_strings, text)
            assert "default" in text or "(required" in text, (name, action.option_strings, text)
        r = run(name, "--help", timeout=60)
        assert r.returncode == 0 and "--debug" in r.stdout


def test_demo(tmp_path):
    r = run("demo", "--out", tmp_path / "demo")
    assert r.returncode == 0, r.stderr
    for name in ("demo_generate.png", "demo_edit.png"):
        assert Image.open(tmp_path / "demo" / name).size == (128, 96)
