"""End to end against a REAL ComfyUI: set COMFYUI_DIR to a ComfyUI checkout (skipped otherwise; with
OPENUNI_REQUIRE_E2E=1, as CI runs them, they fail instead).

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
from comfy_server import (PACK_DIR_NAME, TINY_FILES, Listener, comfy_commit, comfy_dir,  # noqa: E402
                          comfy_problem, running_server, skip_or_fail)

CDIR = comfy_dir()
WORKFLOWS = Path(__file__).resolve().parents[1] / "example_workflows" / "api"
NODES = {"OpenUniModelLoader": "OpenUni Model Loader", "OpenUniTextEncode": "OpenUni Text Encode",
         "OpenUniImageEditEncode": "OpenUni Image Edit Encode (experimental)", "OpenUniSampler": "OpenUni Sampler",
         "OpenUniVAEDecode": "OpenUni VAE Decode", "OpenUniVAEEncode": "OpenUni VAE Encode",
         "OpenUniCaption": "OpenUni Caption", "OpenUniChat": "OpenUni Chat",
         "OpenUniPromptEnhance": "OpenUni Prompt Enhance", "OpenUniEmptyLatent": "OpenUni Empty Latent",
         "OpenUniScheduler": "OpenUni Scheduler", "OpenUniDPMSolverSampler": "OpenUni DPM-Solver++ (sampler)",
         "OpenUniLoraLoader": "OpenUni LoRA Loader (model only)"}


@pytest.fixture(scope="module", autouse=True)
def real_comfyui():
    """First of the module's fixtures: skip (or, in CI, fail) every test here without a real ComfyUI."""
    skip_or_fail([comfy_problem()])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # --preview-method auto: ComfyUI's default sends no live previews
    with running_server(CDIR, tmp_path_factory.mktemp("comfy_e2e"), ["--preview-method", "auto"]) as srv:
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
    # The pack's own import lines only: ComfyUI's core may fail optional imports of its own (e.g. torchaudio).
    failed = [line for line in server.log().splitlines()
              if PACK_DIR_NAME in line and ("Cannot import" in line or "IMPORT FAILED" in line)]
    assert not failed, failed
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
    status, body = server.post("/prompt", {"prompt": bad, "client_id": "openuni-tests"})
    refused = json.dumps(body["node_errors"]["3"]) if status == 400 else ""
    assert "multiple of 32" in refused and "Try 96" in refused  # the sampler's check, when the prompt is queued

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


def _requested(server) -> dict:
    """How often ComfyUI has logged loading each OpenUni part ("Requested to load <class>"): it logs it only when the
    part is not in its list of loaded models."""
    log = server.log()
    return {part: log.count(f"Requested to load {part}") for part in ("OpenUniSana", "DCAEModule", "MLLMPart")}


def _openuni_only(seed: int, prompt: str) -> dict:
    """OpenUni Sampler → core VAE Decode: every part is loaded through its one (base) ModelPatcher."""
    p = workflow("openuni_text_to_image")
    p["2"]["inputs"]["prompt"] = prompt
    p["3"]["inputs"]["seed"] = seed
    p["4"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}}
    return p


def test_unload_models_frees_every_openuni_part(server):
    """After a run the three parts stay loaded (a second run requests none of them again); POST /free with
    unload_models ("Unload models" in the UI) takes every one out of ComfyUI's loaded models, so the next run
    requests all three again (a new prompt needs InternVL3)."""
    assert_success(server.run(_openuni_only(11, "a lighthouse")))
    before = _requested(server)
    assert_success(server.run(_openuni_only(12, "a windmill")))
    assert _requested(server) == before and all(before.values())
    status, _ = server.post("/free", {"unload_models": True})
    assert status == 200
    entry = server.run(_openuni_only(13, "a harbour"))
    assert_success(entry)
    assert _requested(server) == {part: n + 1 for part, n in before.items()}
    assert saved_images(server, entry, "5") == [(64, 64)]


def test_free_memory_then_the_next_run_reloads(server):
    """"Free model and node cache": ComfyUI drops its node cache, so the loader runs again, and the next run works."""
    status, _ = server.post("/free", {"unload_models": True, "free_memory": True})
    assert status == 200
    run = workflow("openuni_text_to_image")
    run["3"]["inputs"]["seed"] = 4321
    entry = server.run(run)
    assert_success(entry)
    assert "1" not in next((m[1]["nodes"] for m in entry["status"]["messages"] if m[0] == "execution_cached"), [])


# ----- the loader's MODEL / VAE in core nodes -------------------------------------------------------------------

NATIVE_WORKFLOWS = {"openuni_native_text_to_image": ("6", (64, 64)), "openuni_inpainting": ("7", (128, 128)),
                    "openuni_hires_fix": ("8", (96, 96)), "openuni_lora": ("7", (64, 64))}


@pytest.mark.parametrize("name", sorted(NATIVE_WORKFLOWS))
def test_native_example_workflows(server, name):
    save, size = NATIVE_WORKFLOWS[name]
    entry = server.run(workflow(name))
    assert_success(entry)
    assert saved_images(server, entry, save) == [size]


def _save_latent(prompt: dict, node_id: str, source: str, prefix: str) -> None:
    prompt[node_id] = {"class_type": "SaveLatent", "inputs": {"samples": [source, 0], "filename_prefix": prefix}}


def _latent(server, entry: dict, node_id: str):
    from safetensors.torch import load_file

    saved = entry["outputs"][node_id]["latents"][0]
    return load_file(str(server.base / "output" / saved["subfolder"] / saved["filename"]))["latent_tensor"]


def test_ksampler_equals_openuni_sampler_for_euler(server):
    """KSampler euler + normal on the MODEL and OpenUni Sampler euler, same prompt and seed, in one prompt."""
    p = workflow("openuni_native_text_to_image")
    p["20"] = {"class_type": "OpenUniSampler", "inputs": {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 1], "seed": 42, "steps": 3, "cfg": 4.5,
        "sampler": "euler", "width": 64, "height": 64, "batch_size": 1}}
    _save_latent(p, "21", "4", "e2e/ksampler")
    _save_latent(p, "22", "20", "e2e/openuni")
    entry = server.run(p)
    assert_success(entry)
    assert (_latent(server, entry, "21") - _latent(server, entry, "22")).abs().max() < 1e-4


def test_inpainting_keeps_the_outside(server):
    """The inpainting workflow's KSampler output equals its input latent outside the mask (the transparent square
    of the input image, latent cells 1..2 of 4×4) and differs inside."""
    import torch

    p = workflow("openuni_inpainting")
    _save_latent(p, "20", "4", "e2e/inpaint_in")
    _save_latent(p, "21", "5", "e2e/inpaint_out")
    entry = server.run(p)
    assert_success(entry)
    before, after = _latent(server, entry, "20"), _latent(server, entry, "21")
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[1:3, 1:3] = True
    assert (after - before)[..., ~inside].abs().max() < 1e-5
    assert (after - before)[..., inside].abs().max() > 1e-2


def test_lora_and_easycache_apply(server):
    """The LoRA workflow changes the result against strength 0; core EasyCache on the MODEL runs."""
    with_lora = workflow("openuni_lora")
    _save_latent(with_lora, "20", "5", "e2e/lora")
    without = json.loads(json.dumps(with_lora))
    without["2"]["inputs"]["strength_model"] = 0.0
    a, b = server.run(with_lora), server.run(without)
    assert_success(a)
    assert_success(b)
    assert (_latent(server, a, "20") - _latent(server, b, "20")).abs().max() > 1e-3
    cached = workflow("openuni_native_text_to_image")
    cached["30"] = {"class_type": "EasyCache", "inputs": {"model": ["1", 1], "reuse_threshold": 0.2,
                                                          "start_percent": 0.15, "end_percent": 0.95, "verbose": True}}
    cached["4"]["inputs"].update(model=["30", 0], seed=77)
    assert_success(server.run(cached))


@pytest.mark.parametrize("name,node", [("openuni_native_text_to_image", "4"), ("openuni_text_to_image", "3")])
def test_live_previews_arrive_over_the_websocket(server, listener, name, node):
    """Binary preview frames (PREVIEW_IMAGE or its with-metadata form) arrive while KSampler / OpenUni Sampler run."""
    p = workflow(name)
    p[node]["inputs"]["seed"] = 900 + len(name)
    start = time.time()
    entry = server.wait(server.queue(p, listener.client_id))
    assert_success(entry)
    frames = [(event, size) for t, event, size in listener.binary if t >= start]
    assert any(event in (1, 4) and size > 100 for event, size in frames), frames


def test_workflows_saved_by_older_versions_still_run(server):
    """A loader saved before 0.3: the old memory label, no mllm_device input."""
    old = workflow("openuni_text_to_image")
    old["1"]["inputs"]["memory"] = "keep all on GPU"
    del old["1"]["inputs"]["mllm_device"]
    old["3"]["inputs"]["seed"] = 31
    assert_success(server.run(old))


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

    # width 500 (e.g. from an old workflow) and 10000 are refused when the prompt is queued, with the engine's message.
    bad = workflow("openuni_text_to_image")
    for seed, (width, message) in enumerate(((500, "Try 512"), (10000, "between 32 and 4096")), start=501):
        bad["3"]["inputs"]["width"] = width
        status, body = server.post("/prompt", {"prompt": bad, "client_id": "openuni-tests"})
        refused = json.dumps(body["node_errors"]["3"]) if status == 400 else ""
        assert f"width {width} is not allowed" in refused and message in refused
        valid(seed)

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
