"""GPU checks of the ComfyUI-native parts that a CPU-only machine cannot make: run once on a CUDA machine, in
ComfyUI's Python, with the tiny models (about a minute):

    COMFYUI_DIR=/path/to/ComfyUI python tests/device_native_check.py [results.json]

- KSampler euler/normal = OpenUni Sampler euler with everything on the GPU (fp32), and a bf16 run;
- SANA and InternVL3 partially loaded on the GPU (the rest cast from RAM per call) = fully loaded;
- the memory settings: streamed InternVL3 is never one of ComfyUI's loaded models, "load SANA, DC-AE only while used"
  unloads them after use, and both give the same latents as "keep parts loaded";
- InternVL3 on the CPU beside SANA on the GPU; Unload models gives the GPU memory back;
- precision fp16: DC-AE not in fp16, a SANA overflow re-run in bf16 by OpenUni Sampler and stopped by KSampler.
Prints one JSON line of measurements and exits non-zero if a check fails. On a machine without CUDA it runs the
same code on the CPU (the GPU-only checks are skipped) to check the script itself.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]
from comfy_inprocess import Comfy  # noqa: E402

from openuni_core.tiny import write_tiny_models  # noqa: E402

STREAM, SEQUENTIAL = "stream InternVL3 to encode", "stream InternVL3; load SANA, DC-AE only while used"


def main() -> int:
    cuda = torch.cuda.is_available()
    tmp = Path(tempfile.mkdtemp(prefix="openuni_device_"))
    comfy = Comfy(tmp / "comfy", write_tiny_models(tmp / "tiny", "tiny-B", seed=0))
    import comfy.model_management as mm

    out, failed = {"cuda": cuda, "device": str(mm.get_torch_device())}, []

    def check(name, ok):
        if not ok:
            failed.append(name)

    def loaded(on_gpu_only: bool = False):
        return [type(p.model).__name__ for p in mm.loaded_models()
                if not on_gpu_only or p.load_device.type != "cpu"]

    # fp32 on the GPU: the two paths batch and order their GEMMs differently (cuBLAS picks kernels per shape), and 8
    # SANA steps amplify those 1e-6 differences; on the CPU they agree within 1e-4 (tests/test_native_sampling.py).
    same = 1e-3 if cuda else 1e-4

    def encode(engine, prompt="a red fox"):
        return comfy.call("OpenUniTextEncode", model=engine, prompt=prompt, negative_prompt="")

    def ours(engine, pos, neg, sampler="euler"):
        return comfy.call("OpenUniSampler", model=engine, positive=pos, negative=neg, seed=5, steps=8, cfg=4.5,
                          sampler=sampler, width=256, height=256, batch_size=1)[0]["samples"]

    engine, model, vae = comfy.load()
    pos, neg = encode(engine)
    latent = comfy.call("OpenUniEmptyLatent", width=256, height=256, batch_size=1)[0]
    native = comfy.call("KSampler", model=model, seed=5, steps=8, cfg=4.5, sampler_name="euler", scheduler="normal",
                        positive=pos, negative=neg, latent_image=latent, denoise=1.0)[0]["samples"]
    reference = ours(engine, pos, neg)
    out["ksampler_vs_openuni_fp32"] = (native - reference).abs().max().item()
    check("ksampler_vs_openuni_fp32", out["ksampler_vs_openuni_fp32"] < same)

    # Partial loading on the device: a third of SANA's size as budget, the rest cast from RAM per call.
    x, sigma = torch.randn(1, 32, 8, 8).to(mm.get_torch_device()), torch.tensor([0.5], device=mm.get_torch_device())
    c = pos[0][0].to(mm.get_torch_device())
    mm.unload_all_models()
    mm.load_models_gpu([model], force_full_load=True)
    with torch.inference_mode():
        full = model.model.apply_model(x, sigma, c_crossattn=c)
    mm.unload_all_models()
    model.partially_load(mm.get_torch_device(), extra_memory=model.model_size() // 3)
    with torch.inference_mode():
        partial = model.model.apply_model(x, sigma, c_crossattn=c)
    model.detach()
    out["sana_partial_vs_full"] = (partial - full).abs().max().item()
    check("sana_partial_vs_full", out["sana_partial_vs_full"] < 1e-5)

    # The memory settings, each its own engine (the loader key includes the setting).
    allocated = torch.cuda.memory_allocated() if cuda else 0
    for label in (STREAM, SEQUENTIAL):
        other = comfy.load(memory=label)[0]
        mm.unload_all_models()
        p2, n2 = encode(other, "a streamed prompt")
        out[f"{label}: InternVL3 loaded after encoding"] = "MLLMPart" in loaded()
        latents = ours(other, p2, n2)
        out[f"{label}: SANA loaded after sampling"] = "OpenUniSana" in loaded()
        p_ref, n_ref = encode(engine, "a streamed prompt")
        out[f"{label}: vs keep parts loaded"] = (latents - ours(engine, p_ref, n_ref)).abs().max().item()
        check(f"{label} result", out[f"{label}: vs keep parts loaded"] < same)
        if cuda:
            check(f"{label} streams InternVL3", not out[f"{label}: InternVL3 loaded after encoding"])
            check(f"{label} SANA", out[f"{label}: SANA loaded after sampling"] == (label == STREAM))

    # InternVL3 on the CPU, SANA/DC-AE on the device.
    split = comfy.load(mllm_device="cpu")[0]
    p3, n3 = encode(split, "a streamed prompt")
    out["mllm_on_cpu_vs_device"] = (p3[0][0] - p_ref[0][0]).abs().max().item()
    check("mllm_on_cpu", out["mllm_on_cpu_vs_device"] < 1e-4 and split.placement.device("mllm").type == "cpu")

    # bf16 (precision auto on a GPU that has it): both paths run and stay finite; DC-AE is never fp16.
    half, half_model, half_vae = comfy.load(precision="auto")
    hp, hn = encode(half)
    images = comfy.call("VAEDecode", vae=half_vae, samples={"samples": ours(half, hp, hn, "dpmpp")})[0]
    out["auto_precision"] = str(half.transformer.dtype)
    out["vae_dtype"] = str(half_vae.vae_dtype)
    check("bf16_finite", bool(torch.isfinite(images).all()) and half_vae.vae_dtype != torch.float16)

    # precision fp16 (what "auto" gives on GPUs without bf16): DC-AE not in fp16; a SANA overflow (a weight ×1e3, as in
    # tests/test_native_precision.py) is re-run wider in OpenUni Sampler and stopped with the fix in KSampler.
    OpenUniError = comfy.module("openuni_core.errors").OpenUniError
    f16, f16_model, f16_vae = comfy.load(precision="fp16", attention="sdpa")
    fp, fn = encode(f16)
    fine = comfy.call("VAEDecode", vae=f16_vae, samples={"samples": ours(f16, fp, fn, "dpmpp")})[0]
    out["fp16_vae_dtype"], out["fp16_sana_dtype"] = str(f16_vae.vae_dtype), str(f16.transformer.dtype)
    check("fp16_finite", bool(torch.isfinite(fine).all()) and f16_vae.vae_dtype != torch.float16)
    with torch.inference_mode():
        f16.transformer.get_parameter("transformer_blocks.0.ff.conv_inverted.weight").mul_(1e3)
    try:
        comfy.call("KSampler", model=f16_model, seed=5, steps=2, cfg=4.5, sampler_name="euler", scheduler="normal",
                   positive=fp, negative=fn, latent_image=latent, denoise=1.0)
        out["fp16_overflow_ksampler"] = "no error"
    except OpenUniError as e:
        out["fp16_overflow_ksampler"] = str(e)
    check("fp16_overflow_ksampler", "precision" in out["fp16_overflow_ksampler"])
    rerun = ours(f16, fp, fn)
    out["fp16_overflow_rerun_dtype"] = str(f16.transformer.dtype)
    check("fp16_overflow_rerun", bool(torch.isfinite(rerun).all()) and f16.transformer.dtype != torch.float16)

    mm.unload_all_models()
    if cuda:
        torch.cuda.synchronize()
        out["allocated_before_MiB"] = allocated / 2**20
        out["allocated_after_unload_MiB"] = torch.cuda.memory_allocated() / 2**20
        # ComfyUI's unload_all_models unloads the models on its devices; InternVL3 put on the CPU (mllm_device) stays
        check("unload_frees_vram", not [n for n in loaded(on_gpu_only=True) if n in ("OpenUniSana", "DCAEModule",
                                                                                       "MLLMPart")])
    out["failed"] = failed
    print(json.dumps(out))
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(out, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    with torch.inference_mode():  # ComfyUI's executor runs every node (and so every model load) in inference mode
        status = main()
    sys.exit(status)
