"""Loading every real format from disk, and what each checkpoint group does."""

import json

import pytest
import torch
from safetensors.torch import load_file

from openuni_core.checkpoint import load_openuni_checkpoint
from openuni_core.loading import load_openuni


def test_original_and_hf_folders_give_the_same_conditioning(tiny, model):
    hf = load_openuni(tiny.checkpoint, tiny.mllm_hf, tiny.sana, tiny.vae, dtype="fp32", device="cpu")
    assert model.report.mllm_format == "original" and hf.report.mllm_format == "hf"
    prompts = ["a red fox in the snow", "a cat"]
    a = model.encode_prompt(prompts).embeds
    b = hf.encode_prompt(prompts).embeds
    assert a.shape == (2, 256, 2304)
    assert (a - b).abs().max().item() <= 1e-5
    assert a.abs().max() > 0 and not torch.equal(a[0], a[1])


def test_original_format_loads_without_custom_code(tiny):
    cfg = json.loads((tiny.mllm_original / "config.json").read_text())
    assert cfg["model_type"] == "internvl_chat" and "auto_map" in cfg
    assert not (tiny.mllm_original / "tokenizer.json").exists()  # tokenizer from vocab.json + merges.txt


def test_checkpoint_transformer_group_replaces_sana_weights_and_changes_the_image(tiny, model):
    from diffusers import SanaTransformer2DModel

    base = SanaTransformer2DModel.from_pretrained(str(tiny.sana / "transformer"))
    ckpt = load_file(str(tiny.checkpoint_safetensors))
    loaded = model.transformer.state_dict()
    for key, base_t in base.state_dict().items():
        want = ckpt[f"transformer.{key}"].float()
        assert torch.equal(loaded[key], want), key
        assert not torch.equal(base_t, want)
    assert "transformer" in model.report.checkpoint_groups

    # Same checkpoint minus its transformer group → base SANA → a different image from the same seed.
    pth = torch.load(tiny.checkpoint, weights_only=True)
    stripped = {k: v for k, v in pth.items() if not k.startswith("transformer.")}
    path = tiny.root / "no_transformer.pth"
    torch.save(stripped, path)
    plain = load_openuni(path, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")
    assert "transformer" not in plain.report.checkpoint_groups
    kw = dict(width=64, height=64, steps=3, cfg=4.5, seed=3)
    img_ft = model.decode(model.sample(model.encode_prompt("a house"), **kw))
    img_base = plain.decode(plain.sample(plain.encode_prompt("a house"), **kw))
    assert (img_ft - img_base).abs().max() > 1e-3


def test_complete_transformer_group_is_assigned_without_reading_the_base_sana_weights(tiny, monkeypatch):
    from diffusers import SanaTransformer2DModel

    def refuse(*a, **k):
        raise AssertionError("base SANA weights read although the checkpoint replaces them all")

    monkeypatch.setattr(SanaTransformer2DModel, "from_pretrained", refuse)
    m = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="bf16", device="cpu")
    ckpt = load_file(str(tiny.checkpoint_safetensors))
    tensors = dict(m.transformer.named_parameters()) | dict(m.transformer.named_buffers())
    assert not any(t.is_meta for t in tensors.values())
    for key, t in m.transformer.state_dict().items():
        assert t.dtype == torch.bfloat16
        assert torch.equal(t, ckpt[f"transformer.{key}"].to(torch.bfloat16)), key
    assert not any(p.requires_grad for p in m.transformer.parameters()) and not m.transformer.training
    lat = m.sample(m.encode_prompt("a fox"), width=64, height=64, steps=2, cfg=3.0, seed=1)
    assert torch.isfinite(lat).all()


def _with_transformer_group(tiny, name, edit):
    sd = torch.load(tiny.checkpoint, weights_only=True)
    edit(sd)
    path = tiny.root / name
    torch.save(sd, path)
    return path


def test_partial_transformer_group_overlays_the_base_weights_and_says_so(tiny):
    from diffusers import SanaTransformer2DModel

    keys = sorted(k for k in torch.load(tiny.checkpoint, weights_only=True) if k.startswith("transformer."))
    dropped = keys[::2]
    path = _with_transformer_group(tiny, "half_transformer.pth", lambda sd: [sd.pop(k) for k in dropped])
    with pytest.warns(UserWarning, match=f"replaced {len(keys) - len(dropped)} of {len(keys)} tensors"):
        m = load_openuni(path, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")
    base = SanaTransformer2DModel.from_pretrained(str(tiny.sana / "transformer")).state_dict()
    ckpt = load_file(str(tiny.checkpoint_safetensors))
    loaded = m.transformer.state_dict()
    for k in keys:
        key = k[len("transformer."):]
        want = base[key] if k in dropped else ckpt[k].float()
        assert torch.equal(loaded[key], want), k


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.__setitem__("transformer.not_a_layer.weight", torch.zeros(3)), "have no place in the model"),
    (lambda sd: sd.__setitem__("transformer.proj_out.weight", torch.zeros(5, 7)), "do not fit the model"),
])
def test_transformer_group_that_does_not_fit_is_refused(tiny, edit, message):
    from openuni_core.errors import OpenUniError

    path = _with_transformer_group(tiny, "bad_transformer.pth", edit)
    with pytest.raises(OpenUniError, match=message):
        load_openuni(path, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")


def test_safetensors_checkpoint_equals_pth(tiny, model):
    st = load_openuni(tiny.checkpoint_safetensors, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")
    a = model.encode_prompt("a boat").embeds
    b = st.encode_prompt("a boat").embeds
    assert torch.equal(a, b)


def test_checkpoint_groups_reported(tiny):
    ckpt = load_openuni_checkpoint(tiny.checkpoint)
    assert ckpt.found() == ["meta_queries", "connector", "projector", "transformer"]
    assert ckpt.meta_queries.shape == (256, 32)
    assert "connector (" in ckpt.describe()


def test_lmm_and_vae_groups_apply_over_base_weights(tiny, model):
    from safetensors import safe_open

    with safe_open(str(tiny.mllm_original / "model.safetensors"), "pt") as f:
        emb = f.get_tensor("language_model.model.embed_tokens.weight")
    sd = torch.load(tiny.checkpoint, weights_only=True)
    new_emb = (emb + 1.0).to(torch.bfloat16)
    sd["lmm.language_model.model.embed_tokens.weight"] = new_emb
    conv = model.vae.state_dict()["decoder.conv_out.conv.weight"] if "decoder.conv_out.conv.weight" in model.vae.state_dict() else None
    key = "decoder.conv_out.weight" if conv is None else "decoder.conv_out.conv.weight"
    vae_w = model.vae.state_dict()[key]
    sd[f"vae.{key}"] = torch.zeros_like(vae_w)
    path = tiny.root / "with_lmm.pth"
    torch.save(sd, path)
    m2 = load_openuni(path, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")
    assert torch.equal(m2.mllm.get_input_embeddings().weight, new_emb.float())
    assert torch.count_nonzero(m2.vae.state_dict()[key]) == 0
    assert {"lmm", "vae"} <= set(m2.report.checkpoint_groups)


def test_bf16_load_keeps_weights_in_bf16(tiny):
    m = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="bf16", device="cpu")
    for module in (m.mllm, m.bridge, m.transformer, m.vae):
        dtypes = {p.dtype for p in module.parameters()}
        assert dtypes == {torch.bfloat16}, (type(module).__name__, dtypes)
    cond = m.encode_prompt("a bf16 fox")
    lat = m.sample(cond, width=64, height=64, steps=2, cfg=3.0, seed=1)
    assert torch.isfinite(lat).all()


def test_variant_identified(tiny, tiny_l, model):
    assert model.variant.name == "tiny-B"
    m = load_openuni(tiny_l.checkpoint, tiny_l.mllm_hf, tiny_l.sana, tiny_l.vae, dtype="fp32", device="cpu")
    assert m.variant.name == "tiny-L" and m.variant.pixels == 512


def test_no_network_at_import():
    import socket
    import subprocess
    import sys

    code = ("import socket\n"
            "def boom(*a, **k): raise SystemExit('network touched')\n"
            "socket.socket.connect = boom\nsocket.create_connection = boom\n"
            "import openuni_core, openuni_core.model, openuni_core.files, openuni_core.tiny\n")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    assert socket  # keep the import used


def test_devices_and_offload_policies_place_parts(tiny, monkeypatch):
    """Placement logic with a stand-in compute device: the policy decides what lives on the device and what
    is streamed in from CPU RAM for each use (and how: the MLLM encodes layer by layer, captions whole)."""
    import contextlib

    from openuni_core import placement as placement_mod

    m = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu",
                     mllm_device="cpu", offload="mllm")
    p = m.placement
    moves, streamed, asked = [], [], []
    fake = torch.device("cuda", 0)
    monkeypatch.setattr(p, "devices", {"mllm": fake, "sana": fake, "vae": fake})

    def fake_move(part, dev):
        if p._where.get(part) != dev:
            moves.append((part, str(dev)))
            p._where[part] = dev

    names = {id(m.mllm): "mllm", id(m.bridge): "bridge", id(m.transformer): "sana", id(m.vae): "vae"}

    @contextlib.contextmanager
    def fake_weights_on(dev, *, whole=(), per_layer=(), on_host=()):
        streamed.append((str(dev), [names[id(x)] for x in whole], [names[id(x)] for x in per_layer]))
        yield

    monkeypatch.setattr(p, "_move", fake_move)
    monkeypatch.setattr(placement_mod, "weights_on", fake_weights_on)
    p.request_memory = lambda n, dev: asked.append(n)
    p._where = {"mllm": placement_mod.CPU, "sana": fake, "vae": fake}
    monkeypatch.setattr(p, "_free_bytes", lambda dev: 1 << 50)  # a roomy stand-in device
    with p.use("mllm", "test", per_layer=True):  # encoding
        pass
    with p.use("mllm", "test"):  # captioning
        pass
    with p.use("sana", "test"):
        pass
    assert moves == []  # the MLLM stays in CPU RAM, SANA stays on the device
    assert streamed == [("cuda:0", ["bridge"], ["mllm"]), ("cuda:0", ["mllm", "bridge"], [])]
    bridge_bytes = sum(p.numel() * p.element_size() for p in m.bridge.parameters())
    assert asked == [bridge_bytes + placement_mod.largest_layer_bytes(m.mllm, m.embedding_tables()), p.part_bytes("mllm")]
    assert asked[0] < asked[1]
    streamed.clear()
    p.policy = "sequential"
    for _ in range(2):
        with p.use("sana", "test"):
            pass
    assert moves == [("sana", "cpu")] and streamed == [("cuda:0", ["sana"], [])] * 2
    moves.clear()
    p.policy = "none"
    p._where = {"mllm": placement_mod.CPU, "sana": placement_mod.CPU, "vae": placement_mod.CPU}  # after offload_all()
    with p.use("vae", "test"):
        pass
    assert moves == [("vae", "cuda:0")]  # comes back and stays


def test_a_whole_part_that_does_not_fit_parks_the_resident_parts_first(tiny, monkeypatch):
    """Captioning under MLLM offload brings InternVL3 in whole; where it does not fit next to SANA and DC-AE
    they are parked on the CPU (the smaller DC-AE first, then SANA) and come back on their next use."""
    import contextlib

    from openuni_core import placement as placement_mod

    m = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu",
                     offload="mllm")
    p = m.placement
    fake = torch.device("cuda", 0)
    monkeypatch.setattr(p, "devices", {"mllm": fake, "sana": fake, "vae": fake})
    moves = []

    def fake_move(part, dev):
        if p._where.get(part) != dev:
            moves.append((part, str(dev)))
            p._where[part] = dev

    monkeypatch.setattr(p, "_move", fake_move)
    monkeypatch.setattr(placement_mod, "weights_on", lambda dev, **k: contextlib.nullcontext())
    p._where = {"mllm": placement_mod.CPU, "sana": fake, "vae": fake}
    need = p.part_bytes("mllm") * 1.1 + (256 << 20)

    monkeypatch.setattr(p, "_free_bytes", lambda dev: int(need) + 1)  # fits: nothing moves
    with p.use("mllm", "captioning"):
        pass
    assert moves == []

    monkeypatch.setattr(p, "_free_bytes", lambda dev: int(need) - p.part_bytes("vae") + 1)  # DC-AE's room suffices
    with p.use("mllm", "captioning"):
        pass
    assert moves == [("vae", "cpu")]
    moves.clear()
    with p.use("vae", "decoding"):
        pass
    assert moves == [("vae", "cuda:0")]
    moves.clear()

    monkeypatch.setattr(p, "_free_bytes", lambda dev: 0)  # nothing fits: both go, the MLLM itself stays offloaded
    with p.use("mllm", "captioning"):
        pass
    assert moves == [("vae", "cpu"), ("sana", "cpu")]


@pytest.mark.parametrize("dtype", ["fp16"])
def test_fp16_load_and_sample(tiny, dtype):
    m = load_openuni(tiny.checkpoint_safetensors, tiny.mllm_hf, tiny.sana, tiny.vae, dtype=dtype, device="cpu")
    p = m.placement
    assert m.transformer.dtype == torch.float16 and m.mllm.dtype == torch.float16
    lat = m.sample(m.encode_prompt("x"), width=32, height=32, steps=2, cfg=2.0, seed=0)
    assert torch.isfinite(lat).all()


def test_request_memory_hook_runs_before_moving_onto_an_accelerator(tiny, monkeypatch):
    m = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")
    p = m.placement
    asked = []
    p.request_memory = lambda n, dev: asked.append((n, str(dev)))
    fake = torch.device("cuda", 0)
    monkeypatch.setattr(p, "devices", {"mllm": fake, "sana": fake, "vae": fake})
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: self)  # no real GPU here
    with p.use("vae", "test"):
        pass
    assert asked == [(p.part_bytes("vae"), "cuda:0")] and p.part_bytes("vae") > 0
    assert p.where()["vae"] == "cuda:0" and p.on_accelerator()


def test_inspect_reads_no_weights_and_names_the_variant(tiny, monkeypatch):
    import safetensors.torch

    from openuni_core.loading import inspect_openuni

    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("weights read"))
    files = inspect_openuni(tiny.checkpoint_safetensors, tiny.mllm_hf, tiny.sana, tiny.vae)
    assert files.variant.name == "tiny-B" and files.mllm_info.format == "hf"
    assert files.checkpoint_groups == ["meta_queries", "connector", "projector", "transformer"]
    assert inspect_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae).variant.name == "tiny-B"
