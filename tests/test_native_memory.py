"""Memory through ComfyUI: every OpenUni part is a ModelPatcher loaded by load_models_gpu, so ComfyUI's own "Unload
models" / "Free memory" and its out-of-memory recovery free them, and the pack keeps nothing alive by itself.
Whole prompts run in ComfyUI's PromptExecutor (what the server's prompt worker runs). Runs inside ComfyUI
(COMFYUI_DIR, ComfyUI's Python); skipped without it."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from comfy_pack import TINY_NODE_INPUTS

OURS = {"OpenUniSana", "DCAEModule", "MLLMPart"}
# attention "eager": a loader key no other test uses, so this file's engine is its own.
LOADER = {"class_type": "OpenUniModelLoader", "inputs": {**TINY_NODE_INPUTS, "attention": "eager"}}


def graph(seed=1) -> dict:
    """Text encode → OpenUni Sampler and KSampler on the MODEL → core VAE Decode → Preview Image."""
    return {
        "1": LOADER,
        "2": {"class_type": "OpenUniTextEncode", "inputs": {"model": ["1", 0], "prompt": "a fox", "negative_prompt": ""}},
        "3": {"class_type": "OpenUniEmptyLatent", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {"model": ["1", 1], "seed": seed, "steps": 3, "cfg": 4.5,
                                                   "sampler_name": "euler", "scheduler": "normal", "positive": ["2", 0],
                                                   "negative": ["2", 1], "latent_image": ["3", 0], "denoise": 1.0}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
        "7": {"class_type": "OpenUniSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 1],
                                                         "seed": seed, "steps": 3, "cfg": 4.5, "sampler": "dpmpp",
                                                         "width": 128, "height": 128, "batch_size": 1}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


def ours_loaded(comfy) -> set[str]:
    return {type(p.model).__name__ for p in comfy.loaded_models()} & OURS


def engines(comfy) -> list:
    registry = comfy.module("nodes.model_cache")._alive
    return [m for key, m in list(registry.items()) if "eager" in key]


def test_unload_models_frees_every_openuni_part(comfy):
    """After a run the three parts are ComfyUI's loaded models; "Unload models" (POST /free → unload_all_models)
    leaves none of them; the next run loads them again and gives the same images."""
    import comfy.model_management as mm

    executor = comfy.executor()
    assert comfy.run(executor, graph(), ["6", "9"]) == []
    assert ours_loaded(comfy) == OURS
    first = [executor.caches.outputs.get(n)[0][0].clone() for n in ("5", "8")]
    mm.unload_all_models()
    assert ours_loaded(comfy) == set()
    again = comfy.executor()  # nothing cached: every node runs on the unloaded parts
    assert comfy.run(again, graph(seed=1), ["6", "9"]) == []
    assert all(torch.equal(again.caches.outputs.get(n)[0][0], f) for n, f in zip(("5", "8"), first))
    assert ours_loaded(comfy) == OURS - {"MLLMPart"}  # the prompt was cached: InternVL3 was not needed


def test_free_memory_frees_the_engine(comfy):
    """"Free memory" (POST /free {"free_memory": true} → executor.reset(), plus unload_all_models): once ComfyUI's node
    cache lets go, the engine and all its parts are freed — the pack keeps no strong reference of its own."""
    import comfy.model_management as mm

    executor = comfy.executor()
    assert comfy.run(executor, graph(seed=2), ["6"]) == []
    alive = [weakref.ref(m) for m in engines(comfy)]
    assert alive and all(r() is not None for r in alive)
    executor.reset()
    mm.unload_all_models()
    del executor
    gc.collect()
    assert all(r() is None for r in alive), "an OpenUni engine outlived ComfyUI's node cache"
    assert ours_loaded(comfy) == set()


def test_out_of_memory_is_recovered_like_comfyuis_own(comfy, monkeypatch):
    """An out-of-memory error while sampling reaches ComfyUI as torch.OutOfMemoryError (with OpenUni's message), so its
    recovery runs: the node error carries the advice and every model, ours included, is unloaded."""
    executor = comfy.executor()
    assert comfy.run(executor, graph(seed=3), ["9"]) == []
    transformer = engines(comfy)[0].transformer

    def out_of_memory(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(transformer, "forward", out_of_memory)
    errors = comfy.run(executor, graph(seed=4), ["9"])
    assert errors and errors[0]["exception_type"].endswith("OpenUniOutOfMemoryError")
    assert "Out of memory while sampling" in errors[0]["exception_message"]
    assert "ran out of memory on your GPU" in errors[0]["exception_message"]  # ComfyUI's own OOM tips
    assert ours_loaded(comfy) == set()


def test_mllm_device_option_places_internvl3(comfy):
    """mllm_device "cpu": InternVL3's patcher loads on the CPU (a torch.device, as ComfyUI compares devices) and encodes
    the same conditioning as beside SANA (catches the device handed over as a string)."""
    engine = comfy.load()[0]
    split = comfy.load(mllm_device="cpu")[0]
    patcher = comfy.module("nodes.native.parts").parts_of(split).mllm
    assert patcher.load_device == torch.device("cpu") and split.placement.device("mllm") == torch.device("cpu")
    got = comfy.call("OpenUniTextEncode", model=split, prompt="two cats", negative_prompt="")[0][0][0]
    want = comfy.call("OpenUniTextEncode", model=engine, prompt="two cats", negative_prompt="")[0][0][0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_captions_and_prompts_are_loaded_through_comfyui(comfy):
    """After the loader, the engine's prompt encoder and answerer both use ComfyUI's placement, and an OpenUni Caption
    run leaves InternVL3 among ComfyUI's loaded models. Catches the engine's placement setter not handing ComfyUI's
    placement to one of them (that one would move InternVL3 itself, unseen by ComfyUI's memory management)."""
    import comfy.model_management as mm

    engine = comfy.load()[0]
    assert engine.answerer.placement is engine.prompts.placement is engine.placement
    assert type(engine.placement).__name__ == "ComfyPlacement"
    mm.unload_all_models()
    comfy.call("OpenUniCaption", model=engine, image=torch.rand(1, 64, 64, 3), question="What is it?", max_tiles=1,
               max_new_tokens=2, temperature=0.7, seed=1)
    assert "MLLMPart" in ours_loaded(comfy)
