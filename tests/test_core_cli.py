"""The command line, run as users run it (a subprocess)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "openuni_core", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)


def test_generate_and_caption(tiny, tmp_path):
    out = tmp_path / "img.png"
    lat = tmp_path / "lat.safetensors"
    common = ["--mllm", tiny.mllm_original, "--sana", tiny.sana, "--vae", tiny.vae, "--checkpoint", tiny.checkpoint,
              "--dtype", "fp32", "--device", "cpu"]
    r = run("generate", *common, "--prompt", "a fox", "--width", 96, "--height", 64, "--steps", 3, "--cfg", 4.5,
            "--seed", 1, "--sampler", "euler", "--batch", 2, "--out", out, "--save-latents", lat)
    assert r.returncode == 0, r.stderr
    files = sorted(tmp_path.glob("img_*.png"))
    assert len(files) == 2 and Image.open(files[0]).size == (96, 64)
    assert load_file(str(lat))["latents"].shape == (2, 32, 2, 3)

    # image-to-image and edit
    r = run("generate", *common, "--prompt", "bluer", "--image", files[0], "--strength", 0.5, "--width", 96,
            "--height", 64, "--steps", 4, "--out", tmp_path / "i2i.png")
    assert r.returncode == 0, r.stderr
    r = run("generate", *common, "--prompt", "make it blue", "--edit-image", files[0], "--width", 64, "--height", 64,
            "--steps", 2, "--out", tmp_path / "edit.png")
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "edit.png")).shape == (64, 64, 3)

    r = run("caption", "--mllm", tiny.mllm_hf, "--image", files[0], "--question", "What?", "--max-tiles", 2,
            "--max-new-tokens", 4, "--dtype", "fp32", "--device", "cpu")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("extra, message", [
    (["--width", "500"], "width 500"),
    (["--steps", "0"], "steps 0"),
    (["--cfg", "-2"], "cfg -2"),
    (["--image", "nope.png", "--strength", "0.5"], "Image not found"),
    (["--strength", "2"], "strength 2.0"),
])
def test_bad_arguments_exit_2_with_message(tiny, tmp_path, extra, message):
    r = run("generate", "--mllm", tiny.mllm_original, "--sana", tiny.sana, "--checkpoint", tiny.checkpoint,
            "--prompt", "x", "--out", tmp_path / "x.png", "--device", "cpu", *extra)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_demo(tmp_path):
    r = run("demo", "--out", tmp_path / "demo")
    assert r.returncode == 0, r.stderr
    for name in ("demo_generate.png", "demo_edit.png"):
        assert Image.open(tmp_path / "demo" / name).size == (128, 96)
