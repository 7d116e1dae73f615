"""End to end against a REAL ComfyUI: set COMFYUI_DIR to a ComfyUI checkout (skipped otherwise).

    COMFYUI_DIR=/path/to/ComfyUI python -m pytest -q tests/test_comfy_e2e.py

Starts ComfyUI's server on 127.0.0.1 (with --cpu, a throw-away --base-directory, this repo linked into
its custom_nodes and tiny models in its models/openuni/), then checks /object_info, runs every
API-format example workflow, checks saved images, the caption output, progress and interrupt, error
reporting, the /free request, and that the server keeps serving after each. ComfyUI runs in its own
Python (see tests/comfy_server.py).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from comfy_server import Listener, TINY_FILES, comfy_commit, comfy_dir, running_server  # noqa: E402

CDIR = comfy_dir()
pytestmark = pytest.mark.skipif(CDIR is None, reason="set COMFYUI_DIR to a ComfyUI checkout to run the e2e tests")
WORKFLOWS = Path(__file__).resolve().parents[1] / "example_workflows" / "api"
NODES = {"OpenUniModelLoader": "OpenUni Model Loader", "OpenUniTextEncode": "OpenUni Text Encode",
         "OpenUniImageEditEncode": "OpenUni Image Edit Encode (experimental)", "OpenUniSampler": "OpenUni Sampler",
         "OpenUniVAEDecode": "OpenUni VAE Decode", "OpenUniVAEEncode": "OpenUni VAE Encode",
         "OpenUniCaption": "OpenUni Caption", "OpenUniChat": "OpenUni Chat",
         "OpenUniPromptEnhance": "OpenUni Prompt Enhance"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(CDIR, tmp_path_factory.mktemp("comfy_e2e")) as srv:
        print(f"\nComfyUI {comfy_commit(CDIR)} at {srv.url} (log: {srv.log_path})")
        yield srv


@pytest.fixture(scope="module")
def listener(server):
    lst = Listener(server)
    yield lst
    lst.close()


def workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def saved_images(server, entry: dict, node_id: str) -> list:
    from PIL import Image

    images = entry["outputs"][node_id]["images"]
    out = []
    for im in images:
        path = server.base / "output" / im["subfolder"] / im["filename"]
        assert path.is_file(), path
        with Image.open(path) as f:
            lo, hi = zip(*f.convert("RGB").getextrema())
            assert max(hi) > min(lo), f"{path} is a blank image"
            out.append(f.size)
    return out


def assert_success(entry: dict) -> None:
    errors = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "success", errors


def test_object_info_lists_every_node(server):
    info = server.get("/object_info")
    for name, display in NODES.items():
        assert name in info, f"{name} not registered:\n{server.log()[-3000:]}"
        node = info[name]
        assert node["category"] == "OpenUni" and node["display_name"] == display
        for section in node["input"].values():
            for inp, spec in section.items():
                assert spec[1].get("tooltip"), f"{name}.{inp}"
    loader = info["OpenUniModelLoader"]["input"]["required"]
    assert TINY_FILES["checkpoint"] in loader["checkpoint"][0]
    assert "openuni_tiny_b_extra.pth" in loader["checkpoint"][0]  # from extra_model_paths.yaml
    assert loader["mllm"][0] == ["auto", TINY_FILES["mllm"]]
    assert info["OpenUniImageEditEncode"].get("experimental") is True
    assert "Cannot import" not in "\n".join(l for l in server.log().splitlines() if "openuni" in l.lower())
    templates = server.get("/workflow_templates")
    assert sorted(templates["comfyui-openuni"]) == sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def test_text_to_image_with_progress(server, listener):
    entry = server.wait(server.queue(workflow("openuni_text_to_image"), listener.client_id))
    assert_success(entry)
    assert saved_images(server, entry, "5") == [(64, 64)]
    steps = [(p["value"], p["max"]) for p in listener.of("progress", entry["prompt"][1]) if p.get("node") == "3"]
    assert steps == [(1, 3), (2, 3), (3, 3)]  # the progress bar moved once per sampling step


def test_image_edit(server):
    entry = server.run(workflow("openuni_image_edit"))
    assert_success(entry)
    assert saved_images(server, entry, "6") == [(64, 64)]


def test_caption_to_generate(server, listener):
    entry = server.wait(server.queue(workflow("openuni_caption_to_generate"), listener.client_id))
    assert_success(entry)
    text = entry["outputs"]["3"]["text"]
    assert isinstance(text, list) and len(text) == 1 and isinstance(text[0], str) and text[0].strip()
    assert saved_images(server, entry, "7") == [(64, 64)]
    caption_progress = [p for p in listener.of("progress", entry["prompt"][1]) if p.get("node") == "3"]
    assert caption_progress and caption_progress[-1]["value"] == caption_progress[-1]["max"] == 12


def test_prompt_enhance_to_generate(server, listener):
    """Short idea → OpenUni Prompt Enhance → Text Encode → sample → decode → save, in the real ComfyUI: the enhanced
    prompt comes back as the node's text (what the web extension shows) and an image is saved. Catches: the node
    missing from the server, a non-list or empty output, no progress while it generates."""
    entry = server.wait(server.queue(workflow("openuni_prompt_enhance_to_generate"), listener.client_id))
    assert_success(entry)
    text = entry["outputs"]["2"]["text"]
    assert isinstance(text, list) and len(text) == 1 and text[0].strip()
    assert saved_images(server, entry, "6") == [(64, 64)]
    progress = [p for p in listener.of("progress", entry["prompt"][1]) if p.get("node") == "2"]
    assert progress and progress[-1]["value"] == progress[-1]["max"] == 12


def test_caption_presets_questions_and_old_prompts_without_a_preset(server):
    """An API prompt saved before presets existed (no 'preset' input) still validates and runs as before; two
    questions give two answers; a preset ignores the question box. Catches: preset made a required input."""
    old = workflow("openuni_caption_to_generate")
    del old["3"]["inputs"]["preset"]
    entry = server.run(old)
    assert_success(entry)
    assert len(entry["outputs"]["3"]["text"]) == 1
    two = workflow("openuni_caption_to_generate")
    two["3"]["inputs"].update(question="What is it?\nWhere is it?", seed=8)
    assert_success(entry := server.run(two))
    assert len(entry["outputs"]["3"]["text"]) == 2
    assert saved_images(server, entry, "7") == [(64, 64), (64, 64)]  # Text Encode ran once per answer
    tags = workflow("openuni_caption_to_generate")
    tags["3"]["inputs"].update(question="One?\nTwo?\nThree?", preset="comma-separated tags", seed=9)
    assert_success(entry := server.run(tags))
    assert len(entry["outputs"]["3"]["text"]) == 1


def test_chat_text_only_and_bad_message(server):
    """Chat without an image, as an output node of its own; an empty message is a node error with our message."""
    prompt = {"1": workflow("openuni_text_to_image")["1"],
              "2": {"class_type": "OpenUniChat", "inputs": {"model": ["1", 0], "message": "Hello!", "system_prompt": "",
                                                            "max_tiles": 1, "max_new_tokens": 5, "temperature": 1.0,
                                                            "seed": 3}}}
    entry = server.run(prompt)
    assert_success(entry)
    assert len(entry["outputs"]["2"]["text"]) == 1
    prompt["2"]["inputs"]["message"] = "  "
    err = _error(server.run(prompt))
    assert err["node_type"] == "OpenUniChat" and "The message is empty" in err["exception_message"]


def test_generate_upscale(server):
    entry = server.run(workflow("openuni_generate_upscale"))
    assert_success(entry)
    assert saved_images(server, entry, "5") == [(64, 64)]
    assert saved_images(server, entry, "10") == [(96, 96)]  # ×1.5, refined by the second sampler


def test_comfyui_conditioning_nodes_work_on_openuni_conditioning(server):
    """Core Conditioning (Average), (Combine) and ZeroOut between OpenUni encode nodes and the sampler."""
    p = workflow("openuni_text_to_image")
    p["20"] = {"class_type": "OpenUniTextEncode",
               "inputs": {"model": ["1", 0], "prompt": "a black cat", "negative_prompt": ""}}
    p["21"] = {"class_type": "ConditioningAverage",
               "inputs": {"conditioning_to": ["2", 0], "conditioning_from": ["20", 0], "conditioning_to_strength": 0.5}}
    p["22"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["21", 0], "conditioning_2": ["2", 0]}}
    p["23"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 1]}}
    p["3"]["inputs"].update(positive=["22", 0], negative=["23", 0], seed=5)
    entry = server.run(p)
    assert_success(entry)
    assert saved_images(server, entry, "5") == [(64, 64), (64, 64)]  # Combine: one image per entry


def _error(entry: dict) -> dict:
    assert entry["status"]["status_str"] == "error"
    return next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")


def test_errors_are_node_errors_and_the_server_keeps_serving(server):
    bad = workflow("openuni_text_to_image")
    bad["3"]["inputs"]["width"] = 100
    err = _error(server.run(bad))
    assert err["node_type"] == "OpenUniSampler" and "multiple of 32" in err["exception_message"]
    assert "Try 96" in err["exception_message"]

    missing = workflow("openuni_text_to_image")
    missing["1"]["inputs"].update(checkpoint="openuni_b_internvl3_1b_sana_0_6b_512_hf_blip3o60k.pth",
                                  mllm="auto", sana="auto", vae="auto")
    err = _error(server.run(missing))
    assert err["node_type"] == "OpenUniModelLoader"
    assert "OpenGVLab/InternVL3-1B" in err["exception_message"] and "download_missing" in err["exception_message"]

    foreign = workflow("openuni_text_to_image")
    foreign["9"] = {"class_type": "ConditioningSetTimestepRange",  # keeps our marker: accepted (keys ignored)
                    "inputs": {"conditioning": ["2", 0], "start": 0.0, "end": 1.0}}
    foreign["3"]["inputs"].update(positive=["9", 0], seed=11)
    assert_success(server.run(foreign))

    good = workflow("openuni_text_to_image")
    good["3"]["inputs"]["seed"] = 1234
    assert_success(server.run(good))


def test_interrupt_mid_sampling_then_a_successful_run(server, listener):
    long = workflow("openuni_text_to_image")
    long["3"]["inputs"].update(steps=1000, seed=99)
    prompt_id = server.queue(long, listener.client_id)
    listener.wait_for(lambda m: m.get("type") == "progress" and m["data"].get("prompt_id") == prompt_id
                      and m["data"].get("node") == "3" and m["data"]["value"] >= 2)
    status, _ = server.post("/interrupt", {})
    assert status == 200
    entry = server.wait(prompt_id)
    assert entry["status"]["status_str"] == "error"
    interrupted = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_interrupted"]
    assert interrupted and interrupted[0]["node_type"] == "OpenUniSampler"
    last = max(p["value"] for p in listener.of("progress", prompt_id) if p.get("node") == "3")
    assert last < 1000  # stopped between steps, long before the end

    after = workflow("openuni_text_to_image")
    after["3"]["inputs"]["seed"] = 100
    entry = server.run(after)
    assert_success(entry)
    assert saved_images(server, entry, "5") == [(64, 64)]


def test_free_memory_request_releases_and_next_run_reloads(server):
    status, _ = server.post("/free", {"unload_models": True, "free_memory": True})
    assert status == 200
    deadline = time.time() + 60  # the prompt worker acts on the request when it next wakes
    while "[OpenUni] memory released on request" not in server.log() and time.time() < deadline:
        time.sleep(0.2)
    run = workflow("openuni_text_to_image")
    run["3"]["inputs"]["seed"] = 4321
    entry = server.run(run)
    assert_success(entry)
    log = server.log()
    assert "[OpenUni] memory released on request" in log
    assert log.count("[OpenUni] tiny-B: loading") >= 2  # node cache dropped: the loader ran again


def test_same_prompt_twice_reuses_everything(server):
    first = server.run(workflow("openuni_image_edit"))
    second = server.run(copy.deepcopy(workflow("openuni_image_edit")))
    assert_success(second)
    cached = next(m[1] for m in second["status"]["messages"] if m[0] == "execution_cached")
    assert "1" in cached["nodes"]  # the loader (and the rest) came from ComfyUI's cache
    assert first["outputs"]["6"] == second["outputs"]["6"]


class _WritesAFile:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


def test_bad_prompts_are_reported_and_the_next_valid_prompt_runs(server):
    """Bad prompts queued straight to the API: each is reported (by ComfyUI's own validation, or as a node error
    carrying the OpenUni message) and the server then runs a valid prompt successfully."""
    import pickle
    import shutil
    import zipfile

    def valid(seed):
        good = workflow("openuni_text_to_image")
        good["3"]["inputs"]["seed"] = seed
        entry = server.run(good)
        assert_success(entry)
        assert saved_images(server, entry, "5") == [(64, 64)]

    # width 500 is inside ComfyUI's min/max, so it reaches the sampler, which refuses it before sampling.
    bad = workflow("openuni_text_to_image")
    bad["3"]["inputs"]["width"] = 500
    err = _error(server.run(bad))
    assert err["node_type"] == "OpenUniSampler" and "width 500 is not allowed" in err["exception_message"]
    assert "Try 512" in err["exception_message"]
    valid(501)

    # width 10000 is above the declared max: ComfyUI's own validation refuses the prompt before it is queued.
    bad["3"]["inputs"]["width"] = 10000
    status, body = server.post("/prompt", {"prompt": bad, "client_id": "openuni-tests"})
    assert status == 400 and "bigger than max" in json.dumps(body["node_errors"]["3"])
    valid(502)

    # Conditioning encoded by another loaded OpenUni model (another checkpoint file) is refused by the sampler.
    foreign = workflow("openuni_text_to_image")
    foreign["20"] = {"class_type": "OpenUniModelLoader",
                     "inputs": {**foreign["1"]["inputs"], "checkpoint": "openuni_tiny_b_extra.pth"}}
    foreign["21"] = {"class_type": "OpenUniTextEncode",
                     "inputs": {"model": ["20", 0], "prompt": "a black cat", "negative_prompt": ""}}
    foreign["3"]["inputs"]["positive"] = ["21", 0]
    err = _error(server.run(foreign))
    assert err["node_type"] == "OpenUniSampler"
    assert "made by a different OpenUni model" in err["exception_message"]
    valid(503)

    # A listed InternVL3 folder that lost its config.json: the loader names the missing file.
    mllm_dir = server.base / "models" / "openuni" / "mllm"
    broken = mllm_dir / "InternVL3-broken"
    shutil.copytree(mllm_dir / TINY_FILES["mllm"], broken)
    (broken / "config.json").unlink()
    evil = server.base / "models" / "openuni" / "openuni_evil.pth"
    marker = server.base / "pwned"
    with zipfile.ZipFile(evil, "w") as z:  # the layout torch.save writes, built with the standard library
        z.writestr("archive/data.pkl", pickle.dumps({"meta_queries": _WritesAFile(marker)}, protocol=2))
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    try:
        missing = workflow("openuni_text_to_image")
        missing["1"]["inputs"]["mllm"] = "InternVL3-broken"
        err = _error(server.run(missing))
        assert err["node_type"] == "OpenUniModelLoader"
        assert "config.json is missing" in err["exception_message"] and "InternVL3-broken" in err["exception_message"]
        valid(504)

        # A checkpoint whose unpickling would run code: refused, and the code never runs.
        malicious = workflow("openuni_text_to_image")
        malicious["1"]["inputs"]["checkpoint"] = "openuni_evil.pth"
        err = _error(server.run(malicious))
        assert err["node_type"] == "OpenUniModelLoader" and "Refused to load" in err["exception_message"]
        assert not marker.exists()
        valid(505)
    finally:
        shutil.rmtree(broken, ignore_errors=True)
        evil.unlink(missing_ok=True)
