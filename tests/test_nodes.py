"""Every node class called the way ComfyUI calls it (`NodeClass().FUNCTION(**inputs)`), on tiny models from disk.

ComfyUI itself is not needed: tests/comfy_pack.py loads the repo as a custom-node package and provides
stand-ins for `folder_paths`, `comfy.model_management` and `comfy.utils`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from comfy_pack import (TINY_CHECKPOINT, TINY_NODE_INPUTS, FakeComfy, InterruptProcessingException, load_pack,  # noqa: E402
                        place_tiny_models, unload_pack)

NODE_NAMES = ["OpenUniModelLoader", "OpenUniTextEncode", "OpenUniImageEditEncode", "OpenUniSampler",
              "OpenUniVAEDecode", "OpenUniVAEEncode", "OpenUniCaption", "OpenUniChat", "OpenUniPromptEnhance", "OpenUniEmptyLatent", "OpenUniScheduler",
              "OpenUniDPMSolverSampler", "OpenUniLoraLoader"]
COMFY_MODULES = ("folder_paths", "comfy", "comfy.model_management", "comfy.utils", "comfy.model_base", "comfy.sd",
                 "latent_preview", "nodes")
CKPT = TINY_CHECKPOINT
TINY = TINY_NODE_INPUTS


class Env:
    def __init__(self, base: Path, fake: FakeComfy, pack, tiny):
        self.base, self.fake, self.pack, self.tiny = base, fake, pack, tiny
        self.models = base / "models"

    def node(self, name):
        return self.pack.NODE_CLASS_MAPPINGS[name]()

    def call(self, name, **inputs):
        """As ComfyUI's executor does: a fresh instance, FUNCTION with keyword inputs, under inference mode."""
        cls = self.pack.NODE_CLASS_MAPPINGS[name]
        with torch.inference_mode():
            return getattr(cls(), cls.FUNCTION)(**inputs)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from openuni_core.tiny import write_tiny_models

    base = tmp_path_factory.mktemp("comfy")
    tiny = write_tiny_models(tmp_path_factory.mktemp("tiny"), "tiny-B", seed=0)
    place_tiny_models(tiny, base / "models")
    fake = FakeComfy(base).install()
    try:
        pack = load_pack("openuni_pack")
        pack_nodes = sys.modules["openuni_pack.nodes"]
        pack_nodes.model_files.register_folders()
        yield Env(base, fake, pack, tiny)
    finally:
        fake.uninstall()
        unload_pack("openuni_pack")


@pytest.fixture(scope="module")
def model(env):
    m = env.call("OpenUniModelLoader", **TINY)[0]
    return m


@pytest.fixture
def fake(env):
    env.fake.progress.clear()
    env.fake.free_calls.clear()
    env.fake.interrupt_after, env.fake.interrupt_checks = None, 0
    return env.fake


def t2i(env, model, prompt="a red fox in the snow", seed=42, steps=3, **kw):
    pos, neg = env.call("OpenUniTextEncode", model=model, prompt=prompt, negative_prompt="")
    args = dict(model=model, positive=pos, negative=neg, seed=seed, steps=steps, cfg=4.5, sampler="dpmpp",
                width=64, height=64, batch_size=1)
    args.update(kw)
    return env.call("OpenUniSampler", **args)[0]


# ----- registration ---------------------------------------------------------------------------------------------

def test_pack_imports_and_lists_without_comfyui(env, monkeypatch):
    """No ComfyUI modules at all (importing one fails, even where ComfyUI is installed): the pack imports, every node
    describes itself, nothing touches the disk."""
    env.fake.uninstall()
    for name in COMFY_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ImportError while this is set
    try:
        bare = load_pack("openuni_pack_bare")
        assert set(bare.NODE_CLASS_MAPPINGS) == set(NODE_NAMES)
        assert bare.WEB_DIRECTORY == "./web" and (Path(bare.__file__).parent / "web" / "openuni.js").is_file()
        spec = bare.NODE_CLASS_MAPPINGS["OpenUniModelLoader"].INPUT_TYPES()["required"]
        assert spec["mllm"][0] == ["auto"]
        assert "openuni_b_internvl3_1b_sana_0_6b_512_hf_blip3o60k.pth" in spec["checkpoint"][0]
        assert bare.NODE_CLASS_MAPPINGS["OpenUniLoraLoader"].INPUT_TYPES()["required"]["lora_name"][0] == []
    finally:
        unload_pack("openuni_pack_bare")
        monkeypatch.undo()
        env.fake.install()


def test_every_node_is_described_for_comfyui(env):
    pack = env.pack
    assert set(pack.NODE_CLASS_MAPPINGS) == set(NODE_NAMES)
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY == "OpenUni"
        display = pack.NODE_DISPLAY_NAME_MAPPINGS[name]
        assert display.startswith("OpenUni ") and " " in display
        assert callable(getattr(cls, cls.FUNCTION)) and cls.DESCRIPTION
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
        for section in cls.INPUT_TYPES().values():
            for inp, (kind, *opts) in section.items():
                assert opts and opts[0].get("tooltip"), f"{name}.{inp} has no tooltip"
    assert "experimental" in pack.NODE_DISPLAY_NAME_MAPPINGS["OpenUniImageEditEncode"].lower()
    sampler = pack.NODE_CLASS_MAPPINGS["OpenUniSampler"].INPUT_TYPES()
    seed = sampler["required"]["seed"][1]
    assert seed["control_after_generate"] is True and seed["max"] == 0xFFFFFFFFFFFFFFFF
    assert sampler["required"]["width"][1]["step"] == 32 and set(sampler["optional"]) == {"latent", "denoise"}


def test_model_folders_are_registered_and_listed(env):
    fp = env.fake.fp
    root = str(env.models / "openuni")
    assert fp.get_folder_paths("openuni")[0] == root
    assert fp.get_folder_paths("openuni_mllm") == [str(Path(root) / "mllm")]
    assert fp.get_folder_paths("LLM") == [str(env.models / "LLM")]
    spec = env.pack.NODE_CLASS_MAPPINGS["OpenUniModelLoader"].INPUT_TYPES()["required"]
    assert spec["checkpoint"][0][:2] == ["openuni_tiny_b.pth", CKPT]  # files present first, then released names
    assert spec["mllm"][0] == ["auto", "InternVL3-tiny", "LLM/OpenGVLab/InternVL3-tiny-hf"]  # not-a-vlm skipped
    assert spec["sana"][0] == ["auto", "Sana-tiny_diffusers"]
    assert spec["vae"][0] == ["auto", "dc-ae-tiny-diffusers", "diffusers/dc-ae-tiny-diffusers"]


def test_extra_model_paths_roots_are_searched(env, tmp_path):
    """A second models/openuni root (as extra_model_paths.yaml adds) contributes checkpoints and folders."""
    extra = tmp_path / "extra_openuni"
    (extra / "sana" / "Sana-other").mkdir(parents=True)
    (extra / "other.pth").write_bytes(b"")
    paths = env.fake.fp.folder_names_and_paths["openuni"][0]
    paths.append(str(extra))
    try:
        spec = env.pack.NODE_CLASS_MAPPINGS["OpenUniModelLoader"].INPUT_TYPES()["required"]
        assert "other.pth" in spec["checkpoint"][0] and "Sana-other" in spec["sana"][0]
    finally:
        paths.remove(str(extra))


@pytest.mark.parametrize("field,value", [("mllm", "../mllm/InternVL3-tiny"), ("sana", "/etc"),
                                         ("vae", "C:\\Windows"), ("checkpoint", "../openuni/" + CKPT),
                                         ("mllm", "mllm/../../secret")])
def test_names_outside_the_model_folders_are_refused(env, field, value):
    from openuni_pack.openuni_core.errors import OpenUniError

    with pytest.raises(OpenUniError, match="not a name inside the ComfyUI model folders"):
        env.call("OpenUniModelLoader", **{**TINY, field: value})


def test_unknown_names_and_auto_without_variant_explain_themselves(env):
    from openuni_pack.openuni_core.errors import OpenUniError

    with pytest.raises(OpenUniError, match="not in .*mllm"):
        env.call("OpenUniModelLoader", **{**TINY, "mllm": "InternVL3-9B"})
    with pytest.raises(OpenUniError, match="'auto' cannot tell which InternVL3 folder"):
        env.call("OpenUniModelLoader", **{**TINY, "mllm": "auto"})


def test_missing_released_files_are_listed_and_downloaded_only_on_request(env, monkeypatch, tmp_path):
    """download_missing off: a clear list of what is missing and where. On: the core's downloader fetches the
    variant's files (huggingface_hub replaced by a local copier, so no network) and the model loads."""
    from openuni_pack.openuni_core.errors import MissingModelFilesError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = tmp_path / "fresh"
    fresh = FakeComfy(base)
    fresh.install()
    pack_nodes = sys.modules["openuni_pack.nodes"]
    try:
        pack_nodes.model_files.register_folders()
        name = "openuni_b_internvl3_1b_sana_0_6b_512_hf_blip3o60k.pth"
        args = dict(TINY, checkpoint=name, mllm="auto", sana="auto", vae="auto")
        with pytest.raises(MissingModelFilesError) as err:
            env.call("OpenUniModelLoader", **args)
        msg = str(err.value)
        assert "OpenGVLab/InternVL3-1B" in msg and "Sana_600M_512px_diffusers" in msg and "download_missing" in msg
        assert str(base / "models" / "openuni" / "mllm" / "InternVL3-1B") in msg

        import huggingface_hub

        tiny, calls = env.tiny, []

        def hf_hub_download(repo_id, filename, local_dir=None, **kw):
            calls.append((repo_id, filename))
            Path(local_dir).mkdir(parents=True, exist_ok=True)
            shutil.copy(tiny.checkpoint, Path(local_dir) / filename)
            return str(Path(local_dir) / filename)

        def snapshot_download(repo_id, local_dir=None, allow_patterns=None, **kw):
            calls.append((repo_id, tuple(allow_patterns)))
            src = {"OpenGVLab/InternVL3-1B": tiny.mllm_original, "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers": tiny.vae,
                   "Efficient-Large-Model/Sana_600M_512px_diffusers": tiny.sana}[repo_id]
            shutil.copytree(src, local_dir, dirs_exist_ok=True)
            return local_dir

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
        m = env.call("OpenUniModelLoader", **{**args, "download_missing": True})[0]
        assert [c[0] for c in calls] == ["wusize/openuni", "OpenGVLab/InternVL3-1B",
                                         "Efficient-Large-Model/Sana_600M_512px_diffusers",
                                         "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"]
        assert m.variant.name == "tiny-B"  # identified structurally, whatever the file is called
        calls.clear()
        again = env.call("OpenUniModelLoader", **{**args, "download_missing": True})[0]
        assert again is m and calls == []  # nothing missing: no download, and the cached model is reused

        # A part that 'auto' finds elsewhere (InternVL3 in models/LLM/) is neither reported nor fetched again.
        shutil.rmtree(base / "models" / "openuni")
        shutil.copytree(tiny.mllm_hf, base / "models" / "LLM" / "InternVL3-1B-hf")
        with pytest.raises(MissingModelFilesError) as err:
            env.call("OpenUniModelLoader", **args)
        assert "InternVL3" not in str(err.value).split("missing:")[1] and "Sana_600M" in str(err.value)
        m2 = env.call("OpenUniModelLoader", **{**args, "download_missing": True})[0]
        assert [c[0] for c in calls] == ["wusize/openuni", "Efficient-Large-Model/Sana_600M_512px_diffusers",
                                         "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"]
        assert not (base / "models" / "openuni" / "mllm" / "InternVL3-1B").exists() and m2 is not m
    finally:
        fresh.uninstall()
        pack_nodes.model_files.register_folders()


def test_loader_reuses_the_model_while_inputs_are_unchanged(env, model, fake, monkeypatch):
    """Identical inputs give the engine that is still alive (two loader nodes, or a re-run) without reading a file;
    other inputs load another; without ComfyUI's model classes the MODEL and VAE outputs are None."""
    loads = []
    import openuni_pack.openuni_core.loading as core_model

    real = core_model.load_openuni
    monkeypatch.setattr(core_model, "load_openuni", lambda *a, **k: loads.append(k) or real(*a, **k))
    same, model_out, vae_out = env.call("OpenUniModelLoader", **TINY)
    assert same is model and loads == [] and model_out is None and vae_out is None
    other = env.call("OpenUniModelLoader", **{**TINY, "checkpoint": "openuni_tiny_b.pth"})[0]
    assert other is not model and len(loads) == 1
    assert loads[0]["dtype"] == "fp32" and loads[0]["offload"] == "none" and loads[0]["device"] == "cpu"
    assert env.call("OpenUniModelLoader", **TINY)[0] is model and len(loads) == 1
    torch.testing.assert_close(t2i(env, other)["samples"], t2i(env, model)["samples"])


@pytest.mark.parametrize("old,new", [("keep all on GPU", "keep parts loaded"),
                                     ("offload MLLM to CPU after encoding", "stream InternVL3 to encode"),
                                     ("sequential offload (low VRAM)", "stream InternVL3; load SANA, DC-AE only while used")])
def test_memory_labels_of_older_workflows_still_load(env, model, old, new):
    """Saved workflows hold the labels of versions before 0.3: ComfyUI's queue-time check (VALIDATE_INPUTS, which
    replaces its list check for this input) accepts them, and they mean what the new label means (an old label
    gives the very engine the new one gives)."""
    cls = env.pack.NODE_CLASS_MAPPINGS["OpenUniModelLoader"]
    assert cls.VALIDATE_INPUTS(memory=old) is True and cls.VALIDATE_INPUTS(memory=new) is True
    assert "Unknown memory setting 'fast'" in cls.VALIDATE_INPUTS(memory="fast")
    assert new in cls.INPUT_TYPES()["required"]["memory"][0] and old not in cls.INPUT_TYPES()["required"]["memory"][0]
    if new == "keep parts loaded":
        assert env.call("OpenUniModelLoader", **{**TINY, "memory": old})[0] is model


def test_mllm_device_option(env, model):
    """Old workflows lack the input (optional, default: the model's device); a device this machine does not have is
    refused at queue time with the choices; 'cpu' loads InternVL3 on the CPU."""
    cls = env.pack.NODE_CLASS_MAPPINGS["OpenUniModelLoader"]
    choices = cls.INPUT_TYPES()["optional"]["mllm_device"][0]
    assert choices[:2] == ["same as the model", "cpu"] and cls.VALIDATE_INPUTS(mllm_device="cpu") is True
    message = cls.VALIDATE_INPUTS(mllm_device="cuda:7")
    assert "cuda:7" in message and "not available" in message and "same as the model" in message
    on_cpu = env.call("OpenUniModelLoader", **TINY, mllm_device="cpu")[0]
    assert on_cpu.placement.device("mllm").type == "cpu"


# ----- generation -------------------------------------------------------------------------------------------------

def test_text_to_image(env, model, fake):
    pos, neg = env.call("OpenUniTextEncode", model=model, prompt="a red fox in the snow", negative_prompt="")
    assert isinstance(pos, list) and len(pos) == 1 and pos[0][0].shape == (1, 256, 2304)
    assert pos[0][1]["openuni_model_id"] == model.model_id and pos[0][1]["openuni_variant"] == "tiny-B"
    assert neg[0][1]["openuni_texts"] == ["Generate an image."]  # empty negative = the model's default
    (latent,) = env.call("OpenUniSampler", model=model, positive=pos, negative=neg, seed=7, steps=4, cfg=4.5,
                         sampler="dpmpp", width=96, height=64, batch_size=2)
    assert set(latent) == {"samples"} and latent["samples"].shape == (2, 32, 2, 3)
    assert [p for p in fake.progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]  # one progress tick per step
    (images,) = env.call("OpenUniVAEDecode", model=model, latent=latent, tiling="auto")
    assert images.shape == (2, 64, 96, 3) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0
    again = env.call("OpenUniSampler", model=model, positive=pos, negative=neg, seed=7, steps=4, cfg=4.5,
                     sampler="dpmpp", width=96, height=64, batch_size=2)[0]
    assert torch.equal(again["samples"], latent["samples"])
    direct = model.sample(model.encode_prompt("a red fox in the snow"), model.encode_negative(""), width=96,
                          height=64, steps=4, cfg=4.5, seed=7, batch_size=2)
    assert torch.equal(direct, latent["samples"])  # the node adds nothing to the core's math


def test_image_to_image_with_denoise(env, model, fake):
    """VAE Encode → Sampler with denoise adds nothing to the engine's image-to-image (which test_core_sampling holds
    to diffusers). Guards against the nodes scaling the latent (e.g. `model.encode_images(...)` →
    `model.encode_images(...) * model.vae.config.scaling_factor` in nodes/vae.py) or dropping `denoise`."""
    image = torch.rand(1, 64, 64, 3)
    (init,) = env.call("OpenUniVAEEncode", model=model, image=image, tiling="auto")
    assert init["samples"].shape == (1, 32, 2, 2)
    pos, neg = env.call("OpenUniTextEncode", model=model, prompt="a watercolor fox", negative_prompt="blurry")
    assert neg[0][1]["openuni_texts"] == ["Generate an image: blurry"]
    fake.progress.clear()
    args = dict(model=model, positive=pos, negative=neg, seed=3, steps=4, cfg=4.5, sampler="euler",
                width=512, height=512, batch_size=1, latent=init)  # width/height come from the latent
    light = env.call("OpenUniSampler", denoise=0.5, **args)[0]["samples"]
    assert light.shape == (1, 32, 2, 2) and fake.progress[-1] == (2, 2)  # 4 steps × denoise 0.5
    direct = model.sample(model.encode_prompt("a watercolor fox"), model.encode_negative("blurry"), width=64, height=64,
                          steps=4, cfg=4.5, seed=3, sampler="euler", init_latents=model.encode_images(image), strength=0.5)
    assert torch.equal(light, direct)
    full = env.call("OpenUniSampler", denoise=1.0, **args)[0]["samples"]
    assert (light - init["samples"]).abs().mean() < (full - init["samples"]).abs().mean()
    # A batch of latents with one prompt → one image per latent.
    two = {"samples": init["samples"].repeat(2, 1, 1, 1)}
    out = env.call("OpenUniSampler", denoise=0.5, **{**args, "latent": two, "batch_size": 5})[0]["samples"]
    assert out.shape[0] == 2
    (no_latent,) = env.call("OpenUniSampler", denoise=0.5, **{**args, "latent": None, "width": 64, "height": 64})
    assert no_latent["samples"].shape == (1, 32, 2, 2)  # denoise without a latent: plain text-to-image


def test_image_edit_encode(env, model):
    images = torch.rand(2, 80, 48, 3)
    pos, neg = env.call("OpenUniImageEditEncode", model=model, image=images, instruction="make it winter",
                        negative_instruction="")
    assert pos[0][0].shape == (2, 256, 2304) and neg[0][0].shape == (2, 256, 2304)
    assert neg[0][1]["openuni_texts"] == ["Keep the image as it is."] * 2
    assert not torch.equal(pos[0][0][0], pos[0][0][1])  # each image conditions its own row
    direct = model.encode_edit(images, "make it winter").embeds
    assert torch.equal(direct, pos[0][0])
    (latent,) = env.call("OpenUniSampler", model=model, positive=pos, negative=neg, seed=1, steps=2, cfg=3.0,
                         sampler="dpmpp", width=64, height=64, batch_size=1)
    assert latent["samples"].shape == (2, 32, 2, 2)


def test_caption_one_answer_per_image(env, model, fake):
    images = torch.rand(2, 64, 80, 3)
    out = env.call("OpenUniCaption", model=model, image=images, question="What is in the picture?", max_tiles=2,
                   max_new_tokens=6, temperature=1.0, seed=5)
    answers = out["result"][0]
    assert out["ui"]["text"] == answers and len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert answers[0] == model.caption(images[0], "What is in the picture?", max_tiles=2, max_new_tokens=6,
                                       temperature=1.0, seed=5)
    assert fake.progress and fake.progress[-1] == (12, 12)  # 2 images × 6 tokens
    assert len(fake.progress) >= 3  # progress also moved while tokens were generated
    cls = env.pack.NODE_CLASS_MAPPINGS["OpenUniCaption"]
    assert cls.OUTPUT_IS_LIST == (True,) and cls.OUTPUT_NODE is True


def test_vae_decode_encode_round_trip(env, model):
    latents = torch.randn(2, 32, 3, 2)
    (images,) = env.call("OpenUniVAEDecode", model=model, latent={"samples": latents}, tiling="off")
    assert images.shape == (2, 96, 64, 3)
    (back,) = env.call("OpenUniVAEEncode", model=model, image=images, tiling="off")
    assert back["samples"].shape == latents.shape
    (again,) = env.call("OpenUniVAEDecode", model=model, latent=back, tiling="off")
    assert again.shape == images.shape
    torch.testing.assert_close(model.decode(model.encode_images(images)), again)
    # Sizes off the 32 grid are center-cropped (as ComfyUI's own VAE Encode crops to its grid).
    (cropped,) = env.call("OpenUniVAEEncode", model=model, image=torch.rand(1, 100, 70, 3), tiling="auto")
    assert cropped["samples"].shape == (1, 32, 3, 2)


def conditioning_average(conditioning_to, conditioning_from, conditioning_to_strength):
    """ComfyUI's ConditioningAverage.addWeighted (nodes.py), verbatim in substance."""
    out = []
    cond_from = conditioning_from[0][0]
    pooled_output_from = conditioning_from[0][1].get("pooled_output", None)
    for i in range(len(conditioning_to)):
        t1 = conditioning_to[i][0]
        pooled_output_to = conditioning_to[i][1].get("pooled_output", pooled_output_from)
        t0 = cond_from[:, :t1.shape[1]]
        if t0.shape[1] < t1.shape[1]:
            t0 = torch.cat([t0] + [torch.zeros((1, (t1.shape[1] - t0.shape[1]), t1.shape[2]))], dim=1)
        tw = torch.mul(t1, conditioning_to_strength) + torch.mul(t0, (1.0 - conditioning_to_strength))
        t_to = conditioning_to[i][1].copy()
        if pooled_output_from is not None and pooled_output_to is not None:
            t_to["pooled_output"] = torch.mul(pooled_output_to, conditioning_to_strength) + torch.mul(
                pooled_output_from, (1.0 - conditioning_to_strength))
        elif pooled_output_from is not None:
            t_to["pooled_output"] = pooled_output_from
        out.append([tw, t_to])
    return (out,)


def test_conditioning_average_of_two_prompts(env, model):
    fox, neg = env.call("OpenUniTextEncode", model=model, prompt="a red fox", negative_prompt="")
    cat, _ = env.call("OpenUniTextEncode", model=model, prompt="a black cat", negative_prompt="")
    (mixed,) = conditioning_average(fox, cat, 0.25)
    expected = 0.25 * fox[0][0] + 0.75 * cat[0][0]
    torch.testing.assert_close(mixed[0][0], expected)
    args = dict(model=model, negative=neg, seed=9, steps=3, cfg=4.5, sampler="dpmpp", width=64, height=64,
                batch_size=1)
    (latent,) = env.call("OpenUniSampler", positive=mixed, **args)
    from openuni_pack.openuni_core.conditioning import QueryConditioning

    direct = model.sample(QueryConditioning(expected, model.model_id), model.encode_negative(""), width=64,
                          height=64, steps=3, cfg=4.5, seed=9)
    torch.testing.assert_close(latent["samples"], direct)
    only_fox = env.call("OpenUniSampler", positive=fox, **args)[0]["samples"]
    assert not torch.allclose(latent["samples"], only_fox)
    # Conditioning (Combine) = list concatenation: one image per entry.
    (both,) = env.call("OpenUniSampler", positive=fox + cat, **{**args, "batch_size": 2})
    assert both["samples"].shape[0] == 4
    # Conditioning Zero Out keeps the marker, so a zeroed negative is accepted.
    zero = [[torch.zeros_like(neg[0][0]), {**neg[0][1], "pooled_output": None}]]
    env.call("OpenUniSampler", positive=fox, **{**args, "negative": zero})


def test_foreign_conditioning_is_rejected_clearly(env, model):
    from openuni_pack.openuni_core.errors import OpenUniError

    pos, neg = env.call("OpenUniTextEncode", model=model, prompt="a fox", negative_prompt="")
    clip = [[torch.randn(1, 77, 768), {"pooled_output": torch.randn(1, 768)}]]
    args = dict(model=model, seed=1, steps=2, cfg=4.5, sampler="dpmpp", width=64, height=64, batch_size=1)
    with pytest.raises(OpenUniError, match="did not come from an OpenUni encode node"):
        env.call("OpenUniSampler", positive=clip, negative=neg, **args)
    with pytest.raises(OpenUniError, match="negative conditioning did not come from an OpenUni"):
        env.call("OpenUniSampler", positive=pos, negative=clip, **args)
    other = [[pos[0][0], {**pos[0][1], "openuni_model_id": "someone-else"}]]
    with pytest.raises(OpenUniError, match="different OpenUni model"):
        env.call("OpenUniSampler", positive=other, negative=neg, **args)
    with pytest.raises(OpenUniError, match="width 100 is not allowed.*multiple of 32"):
        env.call("OpenUniSampler", positive=pos, negative=neg, **{**args, "width": 100})
    with pytest.raises(OpenUniError, match="OpenUni .*latents are"):
        env.call("OpenUniVAEDecode", model=model, latent={"samples": torch.randn(1, 4, 8, 8)}, tiling="auto")
    with pytest.raises(OpenUniError, match="not an OpenUni model"):
        env.call("OpenUniTextEncode", model=object(), prompt="x", negative_prompt="")


def conditioning_concat(conditioning_to, conditioning_from):
    """ComfyUI's ConditioningConcat.concat (nodes.py) in substance: every entry's tokens followed by the first
    entry of conditioning_from, keeping the entry's dict."""
    cond_from = conditioning_from[0][0]
    return [[torch.cat((t, cond_from), 1), d.copy()] for t, d in conditioning_to]


def test_conditioning_concat_of_two_prompts(env, model):
    """Conditioning (Concat) on the positive input alone ([1,512,C] beside a [1,256,C] negative) samples instead of
    failing on mismatched sizes. Repeating a prompt's queries changes nothing in softmax cross-attention, so a prompt
    concatenated with itself gives that prompt's image (catches a concat stacked along the batch or zero-padded)."""
    fox, neg = env.call("OpenUniTextEncode", model=model, prompt="a red fox", negative_prompt="")
    cat, _ = env.call("OpenUniTextEncode", model=model, prompt="a black cat", negative_prompt="")
    args = dict(model=model, negative=neg, seed=9, steps=3, cfg=4.5, sampler="dpmpp", width=64, height=64,
                batch_size=1)
    only_fox = env.call("OpenUniSampler", positive=fox, **args)[0]["samples"]
    fox_fox = env.call("OpenUniSampler", positive=conditioning_concat(fox, fox), **args)[0]["samples"]
    torch.testing.assert_close(fox_fox, only_fox, atol=1e-4, rtol=0)
    fox_cat = conditioning_concat(fox, cat)
    assert fox_cat[0][0].shape[1] == 512
    both = env.call("OpenUniSampler", positive=fox_cat, **args)[0]["samples"]
    assert (both - only_fox).abs().max() > 1e-2
    # Combine of a concatenated entry and a plain one: stacked after repeating to a common length, one image each.
    stacked = env.call("OpenUniSampler", positive=fox_cat + fox, **{**args, "batch_size": 1})[0]["samples"]
    torch.testing.assert_close(stacked[0:1], both, atol=1e-4, rtol=0)
    plain = env.call("OpenUniSampler", positive=fox + fox, **args)[0]["samples"]  # the same noise row for the fox
    torch.testing.assert_close(stacked[1:2], plain[1:2], atol=1e-4, rtol=0)


STEERING = [  # (keys ComfyUI's conditioning nodes set, accepted?) for a 64×64 image
    ({"strength": 1.0}, True), ({"strength": 0.5}, False),
    ({"start_percent": 0.0, "end_percent": 1.0}, True), ({"start_percent": 0.2, "end_percent": 1.0}, False),
    ({"start_percent": 0.0, "end_percent": 0.7}, False),
    ({"area": (8, 8, 0, 0), "strength": 1.0, "set_area_to_bounds": False}, True),
    ({"area": (4, 8, 0, 0), "strength": 1.0, "set_area_to_bounds": False}, False),
    ({"area": ("percentage", 1.0, 1.0, 0, 0), "strength": 1.0, "set_area_to_bounds": False}, True),
    ({"area": ("percentage", 0.5, 1.0, 0.5, 0), "strength": 1.0, "set_area_to_bounds": False}, False),
    ({"mask": torch.ones(1, 64, 64), "set_area_to_bounds": False, "mask_strength": 1.0}, True),
    ({"mask": torch.zeros(1, 64, 64), "set_area_to_bounds": False, "mask_strength": 1.0}, False),
    ({"control": object()}, False),
]


@pytest.mark.parametrize("keys,accepted", STEERING, ids=[f"{sorted(k)[0]}-{a}" for k, a in STEERING])
def test_area_mask_strength_and_timestep_keys(env, model, monkeypatch, keys, accepted):
    """Keys that change a KSampler result are refused by OpenUni Sampler before any work, pointing to KSampler with the
    loader's MODEL; neutral values (strength 1, timestep range 0..1, an area or mask covering the image) pass."""
    from openuni_pack.openuni_core.errors import OpenUniError

    pos, neg = env.call("OpenUniTextEncode", model=model, prompt="a fox", negative_prompt="")
    steered = [[pos[0][0], {**pos[0][1], **keys}]]
    args = dict(model=model, negative=neg, seed=1, steps=1, cfg=4.5, sampler="euler", width=64, height=64,
                batch_size=1)
    if accepted:
        torch.testing.assert_close(env.call("OpenUniSampler", positive=steered, **args)[0]["samples"],
                                   env.call("OpenUniSampler", positive=pos, **args)[0]["samples"])
        return
    monkeypatch.setattr(model, "sample", lambda *a, **k: pytest.fail("sampled despite the refusal"))
    with pytest.raises(OpenUniError, match="KSampler with the OpenUni Model Loader's MODEL output"):
        env.call("OpenUniSampler", positive=steered, **args)
    with pytest.raises(OpenUniError, match="negative conditioning carries"):
        env.call("OpenUniSampler", positive=pos, **{**args, "negative": [[neg[0][0], {**neg[0][1], **keys}]]})


@pytest.mark.parametrize("node", ["OpenUniSampler", "OpenUniEmptyLatent"])
def test_sizes_off_the_grid_are_refused_when_queued(env, node):
    """ComfyUI calls VALIDATE_INPUTS with the widget values by name when a prompt is queued (and then skips its own
    min/max check for them): 500 from an old workflow or the API gets the engine's own message there, before any
    loading; linked values (None at that point) and valid sizes pass."""
    import inspect

    from openuni_pack.openuni_core.errors import OpenUniError
    from openuni_pack.openuni_core.sampling import check_side

    cls = env.pack.NODE_CLASS_MAPPINGS[node]
    assert {"width", "height"} <= set(inspect.getfullargspec(cls.VALIDATE_INPUTS).args)
    with pytest.raises(OpenUniError) as engine_says:
        check_side("width", 500)
    assert cls.VALIDATE_INPUTS(width=500, height=512) == str(engine_says.value)
    assert "Try 512" in cls.VALIDATE_INPUTS(width=512, height=500) and "height 500" in cls.VALIDATE_INPUTS(height=500)
    assert "between 32 and 4096" in cls.VALIDATE_INPUTS(width=8192, height=512)
    assert cls.VALIDATE_INPUTS(width=512, height=768) is True and cls.VALIDATE_INPUTS(width=None, height=None) is True


def test_empty_latent(env):
    (latent,) = env.call("OpenUniEmptyLatent", width=96, height=64, batch_size=3)
    assert latent["samples"].shape == (3, 32, 2, 3) and not latent["samples"].any()


def test_noise_mask_inpaints_inside_and_keeps_the_outside(env, model):
    """A LATENT's noise_mask (Set Latent Noise Mask: 1 = repaint, pixel resolution) is honoured: outside the mask the
    result is the input latent, inside it changes; the same mask given in latent resolution gives the same result."""
    image = torch.rand(1, 128, 128, 3, generator=torch.Generator().manual_seed(3))
    (init,) = env.call("OpenUniVAEEncode", model=model, image=image, tiling="off")
    mask = torch.zeros(1, 128, 128)
    mask[:, 32:96, 32:96] = 1.0  # latent cells 1..2 × 1..2 of 4×4
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[1:3, 1:3] = True
    pos, neg = env.call("OpenUniTextEncode", model=model, prompt="a cat", negative_prompt="")
    args = dict(model=model, positive=pos, negative=neg, seed=2, steps=4, cfg=4.5, sampler="dpmpp", width=128,
                height=128, batch_size=1)
    for denoise in (1.0, 0.6):
        out = env.call("OpenUniSampler", latent={**init, "noise_mask": mask}, denoise=denoise, **args)[0]["samples"]
        torch.testing.assert_close(out[..., ~inside], init["samples"][..., ~inside], atol=1e-6, rtol=0)
        assert (out - init["samples"])[..., inside].abs().max() > 0.1
    latent_res = env.call("OpenUniSampler", latent={**init, "noise_mask": inside[None].float()}, denoise=0.6,
                          **args)[0]["samples"]
    torch.testing.assert_close(latent_res, out)
    from openuni_pack.openuni_core.errors import OpenUniError

    with pytest.raises(OpenUniError, match="noise_mask holds 3 masks for 1 images"):
        env.call("OpenUniSampler", latent={**init, "noise_mask": torch.ones(3, 128, 128)}, **args)


# ----- ComfyUI services: interrupt, memory ------------------------------------------------------------------------

def test_interrupt_stops_sampling_between_steps_and_leaves_the_model_usable(env, model, fake):
    fake.interrupt_after = 3
    with pytest.raises(InterruptProcessingException):
        t2i(env, model, steps=10)
    assert fake.interrupt_checks == 3 and [p[0] for p in fake.progress] == [1, 2]
    fake.progress.clear()
    after = t2i(env, model, steps=4)["samples"]
    assert len(fake.progress) == 4
    fresh = model.sample(model.encode_prompt("a red fox in the snow"), model.encode_negative(""), width=64,
                         height=64, steps=4, cfg=4.5, seed=42)
    assert torch.equal(after, fresh)
    fake.interrupt_after = 2
    with pytest.raises(InterruptProcessingException):
        env.call("OpenUniCaption", model=model, image=torch.rand(1, 64, 64, 3), question="?", max_tiles=1,
                 max_new_tokens=50, temperature=1.0, seed=0)


def test_loaded_models_ask_comfyui_for_room(model):
    """Without ComfyUI's model classes the engine places its parts itself and asks ComfyUI for room first."""
    services = sys.modules["openuni_pack.nodes.comfy_services"]
    assert model.placement.request_memory is services.free_memory
