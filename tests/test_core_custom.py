"""Any consistent OpenUni set loads — not only the widths of the released variants: the architecture is read from
the files. Two tiny sets at widths the variant table does not hold, through the CLI and the loader node, against
diffusers' SanaPipeline on the same weights."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from openuni_core import sampling
from openuni_core.errors import OpenUniError
from openuni_core.loading import inspect_openuni, load_openuni
from openuni_core.tiny import write_tiny_models
from openuni_core.variants import VARIANTS

sys.path.insert(0, str(Path(__file__).parent))
from comfy_pack import FakeComfy, load_pack, unload_pack  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# name → (widths, what the checkpoint says about itself, the connector's heads, the log line's architecture)
CUSTOM = {
    "llm64-sana16": (dict(llm_hidden=64, sana_hidden=16, sana_heads=2, sample_size=8, caption_channels=24,
                          connector_layers=3, connector_heads=1), None, 1,
                     "LLM 64 wide, connector 3×64 (MLP 192, 1 head), SANA 16 wide × 2 layers, 256 px"),
    "llm40-heads5": (dict(llm_hidden=40, sana_hidden=32, sample_size=8, caption_channels=48, connector_layers=2,
                          connector_heads=5), {"connector": {"num_attention_heads": 5}}, 5,
                     "LLM 40 wide, connector 2×40 (MLP 120, 5 heads), SANA 32 wide × 2 layers, 256 px"),
}
PROMPT, SEED, SIZE, STEPS, CFG = "a red fox in the snow", 5, 64, 3, 4.5


@pytest.fixture(scope="module", params=list(CUSTOM))
def custom(request, tmp_path_factory):
    dims, config, heads, label = CUSTOM[request.param]
    t = write_tiny_models(tmp_path_factory.mktemp("custom"), request.param, seed=3, dims=dims, checkpoint_config=config)
    return t, heads, label


def _pipeline_latents(t) -> torch.Tensor:
    """diffusers' SanaPipeline on the set's SANA and DC-AE, with our conditioning, as ComfyUI's LATENT holds it."""
    from diffusers import SanaPipeline

    m = load_openuni(t.checkpoint, t.mllm_original, t.sana, t.vae, dtype="fp32", device="cpu")
    pos, neg = m.encode_pair(PROMPT)
    pipe = SanaPipeline(tokenizer=m.tokenizer, text_encoder=None, vae=m.vae, transformer=m.transformer,
                        scheduler=sampling.make_scheduler("dpmpp", m.scheduler_config))
    mask = torch.ones(1, 256, dtype=torch.long)
    noise = sampling.initial_noise(SEED, (1, 32, SIZE // 32, SIZE // 32))
    out = pipe(prompt=None, negative_prompt=None, prompt_embeds=pos.embeds, prompt_attention_mask=mask,
               negative_prompt_embeds=neg.embeds, negative_prompt_attention_mask=mask, latents=noise,
               guidance_scale=CFG, num_inference_steps=STEPS, height=SIZE, width=SIZE, output_type="latent",
               use_resolution_binning=False, complex_human_instruction=None, return_dict=False)[0]
    return out / m.vae.config.scaling_factor


def test_a_custom_set_is_read_from_its_files(custom):
    """Would catch: identification from the variant table's widths only ("matches no OpenUni variant"), or heads
    not taken from the checkpoint's own config entry / the 64-wide rule."""
    t, heads, label = custom
    assert all(v.llm_hidden != t and v.name != t.variant for v in VARIANTS.values())
    lines = []
    m = load_openuni(t.checkpoint_safetensors, t.mllm_hf, t.sana, t.vae, dtype="fp32", device="cpu", log=lines.append)
    assert f"[OpenUni] custom OpenUni: {label}" in lines
    assert m.variant.custom and m.variant.pixels == 256
    assert {layer.self_attn.num_heads for layer in m.bridge.connector.layers} == {heads}  # transformers' own layers


def test_a_custom_set_through_the_cli_equals_sana_pipeline(custom, tmp_path):
    """Would catch: a custom set refused by the CLI, or sampled with other shapes than diffusers' SanaPipeline."""
    t, _, label = custom
    r = subprocess.run([sys.executable, "-m", "openuni_core", "generate", "--checkpoint", t.checkpoint, "--mllm",
                        t.mllm_original, "--sana", t.sana, "--vae", t.vae, "--prompt", PROMPT, "--width", str(SIZE),
                        "--height", str(SIZE), "--steps", str(STEPS), "--cfg", str(CFG), "--seed", str(SEED),
                        "--dtype", "fp32", "--device", "cpu", "--out", tmp_path / "x.png", "--save-latents",
                        tmp_path / "lat.safetensors"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"custom OpenUni: {label}" in r.stderr
    ours = load_file(str(tmp_path / "lat.safetensors"))["latents"]
    assert (ours - _pipeline_latents(t)).abs().max() <= 1e-4


def test_a_custom_set_through_the_loader_node_equals_sana_pipeline(custom, tmp_path):
    """Would catch: the loader node refusing checkpoints that no released variant names."""
    t, _, _ = custom
    openuni = tmp_path / "models" / "openuni"
    for sub, src in (("mllm", t.mllm_hf), ("sana", t.sana), ("vae", t.vae)):
        shutil.copytree(src, openuni / sub / src.name)
    shutil.copy(t.checkpoint, openuni / t.checkpoint.name)
    fake = FakeComfy(tmp_path).install()
    try:
        pack = load_pack("openuni_custom_pack")
        sys.modules["openuni_custom_pack.nodes"].model_files.register_folders()
        nodes = pack.NODE_CLASS_MAPPINGS
        with torch.inference_mode():
            model, *_native = nodes["OpenUniModelLoader"]().load(  # + MODEL and VAE (None without ComfyUI)
                checkpoint=t.checkpoint.name, mllm=t.mllm_hf.name, sana=t.sana.name, vae=t.vae.name,
                precision="fp32", memory="keep all on GPU", attention="auto")
            pos, neg = nodes["OpenUniTextEncode"]().encode(model=model, prompt=PROMPT, negative_prompt="")
            (latent,) = nodes["OpenUniSampler"]().sample(model=model, positive=pos, negative=neg, seed=SEED,
                                                         steps=STEPS, cfg=CFG, sampler="dpmpp", width=SIZE,
                                                         height=SIZE, batch_size=1)
    finally:
        fake.uninstall()
        unload_pack("openuni_custom_pack")
    assert (latent["samples"] - _pipeline_latents(t)).abs().max() <= 1e-4


def test_custom_parts_that_do_not_fit_each_other_name_both_shapes(custom, tiny, tmp_path):
    """Would catch: a custom set accepted although its parts cannot work together."""
    t, _, _ = custom
    with pytest.raises(OpenUniError, match=r"Mismatched models: .* needs an InternVL3 \(LLM width (64|40): its meta "
                                           r"queries are \[256, (64|40)\]\), but .* \(LLM width 32\)"):
        inspect_openuni(t.checkpoint, tiny.mllm_original, t.sana, t.vae)
    with pytest.raises(OpenUniError, match=r"projects to (24|48) channels but .* expects caption_channels=2304"):
        inspect_openuni(t.checkpoint, t.mllm_original, tiny.sana, t.vae)
    sd = torch.load(t.checkpoint, weights_only=True)
    sd["projector.weight"] = sd["projector.weight"][:, :-8]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(OpenUniError, match=r"bad\.pth does not fit together: its projector takes (56|32) channels "
                                           r"\(projector.weight \[(24|48), (56|32)\]\) but its connector is (64|40) wide"):
        inspect_openuni(tmp_path / "bad.pth", t.mllm_original, t.sana, t.vae)
    if sd.pop("openuni_config", None):  # 40 wide: without its own word, the heads cannot be known
        torch.save(sd, tmp_path / "no_heads.pth")
        with pytest.raises(OpenUniError, match=r"no_heads\.pth: its connector is 40 wide, not a multiple of OpenUni's "
                                               r"64-wide attention heads, and the file does not say how many"):
            inspect_openuni(tmp_path / "no_heads.pth", t.mllm_original, t.sana, t.vae)
