"""Pictures of every example workflow in the REAL ComfyUI frontend, for the README: docs/workflows/<name>.png.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/python NODE_PATH=/path/to/node_modules \\
        python tests/screenshot_workflows.py [name ...]

Starts ComfyUI on 127.0.0.1 over a throw-away base folder holding this pack (tests/comfy_server.py, as the
frontend test does), loads each example_workflows/<name>.json in headless Chromium (tests/comfy_screenshot.js,
playwright-core found through NODE_PATH, Chromium at $CHROMIUM or /usr/bin/chromium), fits the view to the graph
and saves the canvas. Each PNG is then reduced to a 256-colour palette (Pillow), which keeps it well under 300 KB.
Run it again after changing a workflow (docs/testing.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import comfy_workflows as wf  # noqa: E402
from comfy_server import comfy_dir, running_server  # noqa: E402

OUT = HERE.parent / "docs" / "workflows"
VIEWPORT = (1600, 900)
SCALE = 1.5  # device pixels per CSS pixel: crisp widget text when the graph is fitted small


def shrink(png: Path) -> None:
    """A graph has few colours: a 256-colour palette keeps it legible at a fraction of the size."""
    from PIL import Image

    with Image.open(png) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(png, optimize=True)


def main(names: list[str]) -> int:
    cdir = comfy_dir()
    if cdir is None:
        print("Set COMFYUI_DIR to a ComfyUI checkout (and COMFYUI_PYTHON to its python).", file=sys.stderr)
        return 2
    names = names or sorted(wf.WORKFLOWS)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="openuni_shots_") as tmp, running_server(cdir, Path(tmp)) as server:
        request = Path(tmp) / "request.json"
        request.write_text(json.dumps({"workflows": {n: json.loads((wf.OUT / f"{n}.json").read_text()) for n in names},
                                       "width": VIEWPORT[0], "height": VIEWPORT[1], "scale": SCALE}))
        proc = subprocess.run(["node", str(HERE / "comfy_screenshot.js"), server.url + "/", str(request), str(OUT)],
                              env={**os.environ, "CHROMIUM": os.environ.get("CHROMIUM", "/usr/bin/chromium")},
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, server.log()[-3000:], sep="\n", file=sys.stderr)
            return 1
    for n in names:
        shrink(OUT / f"{n}.png")
        print(f"{OUT / f'{n}.png'}: {(OUT / f'{n}.png').stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
