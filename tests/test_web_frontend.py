"""The frontend extension and the UI-format workflows in the REAL ComfyUI web UI, in headless Chromium.

Needs COMFYUI_DIR (a ComfyUI checkout with its frontend package installed), Node.js, playwright-core
(found through NODE_PATH, $PLAYWRIGHT_CORE_DIR or /opt/pwtest/node_modules) and a Chromium binary
($CHROMIUM, default /usr/bin/chromium); skipped otherwise, naming what is missing (with OPENUNI_REQUIRE_E2E=1, as
CI runs them, they fail instead). Checks that:
- web/openuni.js is loaded by the UI;
- every example workflow loads by drag-and-drop format (no missing nodes) and the UI turns it into the same
  API prompt as example_workflows/api/ (with the real model names);
- OpenUni Sampler snaps width/height to multiples of 32 and its aspect presets set both;
- running the caption and prompt-enhance workflows from the UI shows the text on the OpenUni Caption and OpenUni
  Prompt Enhance nodes;
- a caption workflow saved before OpenUni Caption had its preset input loads with its values where they were.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import comfy_workflows as wf  # noqa: E402
from comfy_pack import load_pack  # noqa: E402
from comfy_server import comfy_dir, comfy_problem, running_server, skip_or_fail  # noqa: E402

HERE = Path(__file__).parent
CDIR = comfy_dir()
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _node_path() -> str | None:
    for cand in [os.environ.get("PLAYWRIGHT_CORE_DIR"), *os.environ.get("NODE_PATH", "").split(os.pathsep),
                 "/opt/pwtest/node_modules"]:
        if cand and (Path(cand) / "playwright-core").is_dir():
            return cand
        if cand and Path(cand).name == "playwright-core" and Path(cand).is_dir():
            return str(Path(cand).parent)
    return None


NODE_PATH = _node_path()


@pytest.fixture(scope="module", autouse=True)
def browser_and_comfyui():
    """First of the module's fixtures: skip (or, in CI, fail) every test here without ComfyUI, Node.js,
    playwright-core or Chromium."""
    skip_or_fail([comfy_problem(),
                  shutil.which("node") is None and "Node.js (node) is not on PATH",
                  NODE_PATH is None and "playwright-core is not found (set NODE_PATH to the node_modules holding it)",
                  not Path(CHROMIUM).exists() and f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)"])


def before_presets(ui: dict) -> dict:
    """The caption workflow as saved before OpenUni Caption had a preset input: one widget value fewer."""
    for node in ui["nodes"]:
        if node["type"] == "OpenUniCaption":
            assert node["widgets_values"][-1] == "custom question"
            node["widgets_values"] = node["widgets_values"][:-1]
    return ui


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_web")
    with running_server(CDIR, base) as server:
        request = {
            "workflows": {n: json.loads((wf.OUT / f"{n}.json").read_text()) for n in wf.WORKFLOWS},
            "tiny": {n: json.loads((wf.OUT / "api" / f"{n}.json").read_text()) for n in wf.WORKFLOWS},
            "run": {"caption": ["openuni_caption_to_generate", "OpenUniCaption"],
                    "enhance": ["openuni_prompt_enhance_to_generate", "OpenUniPromptEnhance"]},
            "old": before_presets(json.loads((wf.OUT / "openuni_caption_to_generate.json").read_text())),
            "sampler": "openuni_text_to_image",
        }
        req, out, shot = base / "request.json", base / "web_result.json", base / "caption_node.png"
        req.write_text(json.dumps(request))
        proc = subprocess.run(["node", str(HERE / "comfy_web_check.js"), server.url + "/", str(req), str(out), str(shot)],
                              env={**os.environ, "NODE_PATH": NODE_PATH, "CHROMIUM": CHROMIUM},
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{server.log()[-3000:]}"
        result = json.loads(out.read_text())
        result["screenshot"] = str(shot)
        print(f"\nscreenshots of the caption and enhance nodes: {shot}, {shot.with_name('caption_node_enhance.png')}")
        yield result

def test_extension_is_loaded_without_errors(web):
    assert web["extensionLoaded"]
    assert {"OpenUniModelLoader", "OpenUniSampler", "OpenUniCaption", "OpenUniChat",
            "OpenUniPromptEnhance"} <= set(web["registered"])
    ours = [e for e in web["pageErrors"] + web["consoleErrors"] if "openuni" in e.lower()]
    assert not ours, ours


@pytest.mark.parametrize("name", sorted(wf.WORKFLOWS))
def test_ui_workflow_loads_and_converts_to_the_api_copy(web, name):
    pack = load_pack("openuni_pack")
    got = web["workflows"][name]
    assert got["missing"] == []
    expected = wf.api_workflow(name, pack.NODE_CLASS_MAPPINGS, tiny=False)
    output = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in got["output"].items()}
    assert output == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in expected.items()}
    # The UI-only widgets (caption text, aspect preset) are not saved into the workflow.
    ui = json.loads((wf.OUT / f"{name}.json").read_text())
    for node in ui["nodes"]:
        assert got["widgetsValues"][str(node["id"])] == node["widgets_values"], node["type"]


def test_sampler_keeps_sizes_on_multiples_of_32_with_presets(web):
    s = web["sampler"]
    assert s["loadedSize"] == [1344, 768] and s["presetOnLoad"] == "L-1024 16:9 (1344×768)"
    assert s["snapped"] == [512, 32]
    assert s["afterPreset"] == [1344, 768]
    assert s["presetAfterEdit"] == "custom"
    assert any("B/L-512 1:1 (512×512)" == p for p in s["presets"]) and len(s["presets"]) >= 10
    assert "aspect_preset" in s["widgetNames"] and "aspect_preset" not in s["promptKeys"]


def test_caption_text_appears_on_the_node(web):
    c = web["caption"]
    assert c["hasWidget"] and c["before"] == ""
    assert c["text"] and c["text"].strip(), c
    assert c["domText"] == c["text"] and c["domVisible"]


def test_enhanced_prompt_appears_on_the_node(web):
    """Catches: OpenUni Prompt Enhance left out of the extension's text nodes."""
    e = web["enhance"]
    assert e["hasWidget"] and e["before"] == ""
    assert e["text"] and e["text"].strip(), e
    assert e["domText"] == e["text"] and e["domVisible"]


def test_caption_workflow_saved_before_presets_keeps_its_values(web):
    """Catches: a preset input that shifts the positional widget values of older saved workflows."""
    old = web["old"]
    expected = {"question": "Describe this image in one detailed sentence.", "max_tiles": 12, "max_new_tokens": 128,
                "temperature": 0.0, "seed": 0, "preset": "custom question"}
    assert {k: old["inputs"][k] for k in expected} == expected
    assert {k: old["widgets"][k] for k in expected} == expected
