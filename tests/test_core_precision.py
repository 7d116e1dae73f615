"""fp16 never gives a black image or a NaN latent: DC-AE never runs in fp16, and an InternVL3 or SANA overflow in fp16
is re-run in a wider dtype (one log line) or explained by an error naming the precision setting.

The overflows are real: tiny models whose weights are scaled so that fp16 (max 65504) overflows on the CPU while
fp32 stays finite — each test first shows the library itself giving inf/NaN on those files in fp16.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from openuni_core import devices, sampling
from openuni_core.devices import part_dtypes
from openuni_core.errors import OpenUniError
from openuni_core.loading import load_openuni
from openuni_core.precision import NonFiniteError

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
SANA_KEY = "transformer.transformer_blocks.0.ff.conv_inverted.weight"  # ×1e3: its GLU product passes 65504
LLM_KEYS = ("layers.0.mlp.up_proj.weight", "layers.0.mlp.down_proj.weight")  # ×1e4 each: the residual passes 65504


def _scaled_vae(tiny, folder):
    """The tiny DC-AE with its decoder's first convolution ×1000 (its RMS norms keep fp32 outputs ordinary)."""
    shutil.copytree(tiny.vae, folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    for key in ("decoder.conv_in.weight", "decoder.conv_in.bias"):
        sd[key] = sd[key] * 1000.0
    save_file(sd, str(weights))
    return folder


def _scaled_checkpoint(tiny, path, sana: bool = False, llm: bool = False):
    sd = torch.load(tiny.checkpoint, weights_only=True)
    if sana:
        sd[SANA_KEY] = sd[SANA_KEY].float() * 1e3
    if llm:
        base = load_file(str(tiny.mllm_original / "model.safetensors"))
        for key in LLM_KEYS:
            sd[f"lmm.language_model.model.{key}"] = base[f"language_model.model.{key}"].float() * 1e4
    torch.save(sd, path)
    return path


def _load(tiny, precision, checkpoint=None, vae=None, log=None):
    return load_openuni(checkpoint or tiny.checkpoint, tiny.mllm_original, tiny.sana, vae or tiny.vae,
                        dtype=precision, device="cpu", log=log)


def test_each_part_gets_its_precision(monkeypatch):
    """Would catch: DC-AE loaded in fp16 (its activations overflow it), "auto" choosing bf16 on GPUs that only
    emulate it, or bf16 used as DC-AE's fallback where the GPU lacks it."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert part_dtypes("fp16", cpu) == {"mllm": F16, "sana": F16, "vae": F32}
    assert part_dtypes("auto", cpu) == {"mllm": F32, "sana": F32, "vae": F32}
    assert part_dtypes("bf16", cpu) == {"mllm": BF16, "sana": BF16, "vae": BF16}
    monkeypatch.setattr(devices, "native_bf16", lambda device: False)  # a T4 / RTX 20xx / V100
    assert part_dtypes("auto", gpu) == part_dtypes("fp16", gpu) == {"mllm": F16, "sana": F16, "vae": F32}
    monkeypatch.setattr(devices, "native_bf16", lambda device: True)  # Ampere and newer
    assert part_dtypes("auto", gpu) == {"mllm": BF16, "sana": BF16, "vae": BF16}
    assert part_dtypes("fp16", gpu) == {"mllm": F16, "sana": F16, "vae": BF16}
    with pytest.raises(OpenUniError, match="Unknown precision 'fp8'"):
        part_dtypes("fp8", cpu)


def test_dcae_at_precision_fp16_decodes_like_fp32(tiny, tmp_path):
    """Would catch: DC-AE loaded in the fp16 the other parts get (the decode is then all NaN: a black image)."""
    from diffusers import AutoencoderDC

    vae = _scaled_vae(tiny, tmp_path / "dc-ae-scaled")
    latents = torch.randn(1, 32, 2, 3, generator=torch.Generator().manual_seed(0))
    raw = AutoencoderDC.from_pretrained(str(vae), torch_dtype=F16)
    assert not torch.isfinite(raw.decode(latents.half(), return_dict=False)[0]).all()  # the library in fp16

    m16, m32 = _load(tiny, "fp16", vae=vae), _load(tiny, "fp32", vae=vae)
    assert m16.vae.dtype == F32 and m16.transformer.dtype == F16
    image = m16.decode(latents)
    assert torch.isfinite(image).all() and (image - m32.decode(latents)).abs().max() <= 1e-6
    assert (image - image.mean()).abs().max() > 0.05  # an image, not a constant
    assert torch.equal(m16.encode_images(image), m32.encode_images(image))


def test_sana_fp16_overflow_is_rerun_in_fp32_with_one_log_line(tiny, tmp_path):
    """Would catch: the sampling loop without its inf/NaN check (the NaN latent would reach VAE Decode), or a
    recovery that does not re-run SANA in a wider dtype."""
    ckpt = _scaled_checkpoint(tiny, tmp_path / "sana_scaled.pth", sana=True)
    lines = []
    m16, m32 = _load(tiny, "fp16", ckpt, log=lines.append), _load(tiny, "fp32", ckpt)
    cond = m16.encode_prompt("a red fox")
    kw = dict(width=64, height=64, steps=3, cfg=1.0, seed=1)
    with pytest.raises(NonFiniteError):  # the library's SANA on these files in fp16
        sampling.sample(m16.transformer, m16.scheduler_config, cond.embeds, None, **kw)
    lines.clear()
    latents = m16.sample(cond, **kw)
    assert lines == ["[OpenUni] SANA gave inf/NaN values at step 1 of 3 in fp16 (an overflow); running SANA in fp32 "
                     "from now on."]
    assert m16.transformer.dtype == F32 and torch.isfinite(latents).all()
    want = m32.sample(cond, **kw)
    assert (latents - want).abs().max() <= 1e-3 * want.abs().max()
    assert torch.isfinite(m16.sample(cond, **kw)).all() and len(lines) == 1  # stays in fp32, says it once


def test_sana_inf_that_cannot_be_rerun_raises_an_error_naming_the_precision(tiny, tmp_path):
    """Would catch: a NaN latent returned (saved as black) when SANA cannot be re-run wider (a host's placement that
    cannot cast) or when it gives NaN in fp32 (damaged weights)."""
    ckpt = _scaled_checkpoint(tiny, tmp_path / "sana_scaled.pth", sana=True)
    m16 = _load(tiny, "fp16", ckpt)
    m16.placement.cast = None
    cond = m16.encode_prompt("a red fox")
    with pytest.raises(OpenUniError, match=r"SANA gave inf/NaN values at step 1 of 2 in fp16 \(an overflow\)\. Set the "
                                           r"loader's precision to bf16 .* or fp32"):
        m16.sample(cond, width=64, height=64, steps=2, seed=1)

    sd = torch.load(tiny.checkpoint, weights_only=True)
    sd[SANA_KEY] = torch.full_like(sd[SANA_KEY], float("nan"))
    torch.save(sd, tmp_path / "nan.pth")
    m32 = _load(tiny, "fp32", tmp_path / "nan.pth")
    with pytest.raises(OpenUniError, match=r"SANA gave inf/NaN values at step 1 of 2 in fp32.*re-download"):
        m32.sample(m32.encode_prompt("a fox"), width=64, height=64, steps=2, seed=1)


def test_internvl3_fp16_overflow_is_rerun_for_prompts_and_captions(tiny, tmp_path):
    """Would catch: PromptEncoder or captioning without the inf/NaN check on InternVL3's output (NaN conditioning, or
    a caption of garbage tokens), or a recovery that leaves InternVL3 in fp16."""
    ckpt = _scaled_checkpoint(tiny, tmp_path / "llm_scaled.pth", llm=True)
    lines = []
    m16, m32 = _load(tiny, "fp16", ckpt, log=lines.append), _load(tiny, "fp32", ckpt)
    lm = m16.mllm.model.language_model
    ids = m16.tokenizer("a red fox", return_tensors="pt").input_ids
    assert not torch.isfinite(lm(input_ids=ids).last_hidden_state).all()  # the library's InternVL3 in fp16
    lines.clear()
    cond = m16.encode_prompt("a red fox").embeds
    assert lines == ["[OpenUni] InternVL3 gave inf/NaN values while encoding the prompt in fp16 (an overflow); "
                     "running InternVL3 in fp32 from now on."]
    # fp32 compute on weights that were rounded to fp16 when loaded (the tiny InternVL3 files hold fp32)
    assert m16.mllm.dtype == F32 and (cond - m32.encode_prompt("a red fox").embeds).abs().max() <= 1e-2

    m16 = _load(tiny, "fp16", ckpt, log=lines.append)
    image = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0))
    lines.clear()
    assert m16.caption(image, max_new_tokens=4) == m32.caption(image, max_new_tokens=4)
    assert lines == ["[OpenUni] InternVL3 gave inf/NaN values while captioning in fp16 (an overflow); running "
                     "InternVL3 in fp32 from now on."]
