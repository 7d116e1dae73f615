"""CUDA memory: peak VRAM and seconds per image for each memory policy (section `cuda`, only on CUDA).

Each policy (`none`, `mllm`, `sequential`) is loaded fresh. At each size (the variant's own and twice it) a
warm-up image comes first, then one image with a new prompt (so the LLM runs), measured with
`torch.cuda.max_memory_allocated` / `max_memory_reserved` and the Stopwatch's stages.
"""

from __future__ import annotations

import gc

import torch

from .common import PROMPTS, Report, Settings, fmt_stages, gb, ours_generate


def bench_cuda_memory(paths, name: str, s: Settings, sizes: list[int], report: Report) -> dict:
    """Peak VRAM and seconds per image for each memory policy (fresh load per policy)."""
    from openuni_core.loading import load_openuni
    from openuni_core.options import MEMORY_POLICIES

    out = {}
    for policy in MEMORY_POLICIES:
        model = load_openuni(paths.checkpoint, paths.mllm, paths.sana, paths.vae, dtype=s.dtype, device=s.device,
                             offload=policy)
        for size in sizes:
            kw = dict(steps=s.steps, cfg=s.cfg, width=size, height=size)
            ours_generate(model, PROMPTS[0], seed=1, **kw)  # warm-up
            torch.cuda.reset_peak_memory_stats(s.device)
            _, w = ours_generate(model, PROMPTS[2] + f" {policy} {size}", seed=2, **kw)
            peak = torch.cuda.max_memory_allocated(s.device)
            reserved = torch.cuda.max_memory_reserved(s.device)
            out[f"{policy}@{size}"] = {"peak_vram_bytes": peak, "peak_reserved_bytes": reserved, "s_per_image": w.wall,
                                       "stages": {k: round(v, 4) for k, v in w.stages.items()}}
            report.say(f"[{name}] CUDA offload={policy} {size}²: peak VRAM {gb(peak)} (reserved {gb(reserved)}), "
                       f"{w.wall:.3f} s/image ({fmt_stages(w.stages)})")
        del model
        gc.collect()
        torch.cuda.empty_cache()
    return out
