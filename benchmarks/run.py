"""The benchmark: `python -m benchmarks`, run from the repository root (results are written up in BENCHMARKS.md).

On real-size models with random weights (written once by `benchmarks/models.py`), on the current device:

1. compare  — the reference path (what upstream OpenUni's inference does: one padded [prompt, CFG prompt]
              LLM batch with the meta queries appended, connector + projector, then diffusers'
              `SanaPipeline` with the DPM-Solver++ scheduler and the DC-AE decode) against our path (the
              core exactly as the nodes call it: `load_openuni`, `encode_pair`, `sample`, `decode`), same
              weights (shared modules, no second copy), dtype, steps, cfg, size and CPU noise. Seconds per
              image, ours/reference, and max |Δ| between the two images.                     (compare.py)
2. repeat   — a run with the same prompt again (ComfyUI re-running with a new seed): LLM forwards, time.
                                                                                              (compare.py)
3. load     — disk to ready-to-sample, ours vs a naive `from_pretrained` of each part in fp32 then cast,
              each in a fresh process: seconds and peak process RAM (RSS, and anonymous memory) over the
              pre-load baseline, against the loaded weights' bytes.                           (load.py)
4. placement — the weights each memory policy puts on the accelerator at its worst moment (computed from
              the loaded parameters, so it runs anywhere).                                    (placement.py)
5. cuda     — peak VRAM and time per memory policy (all on GPU, MLLM offload, sequential offload), per
              variant and size; only on CUDA.                                                 (cuda_memory.py)
6. captioning — captions per second for 8 images, one call per image (sequential) vs one batched call, on the
              variant's InternVL3 alone; whether the answers are identical; a cached repeat's forwards.
                                                                                              (captioning.py)
7. tiling   — DC-AE decode/encode at 2048² tiled vs untiled (real-size DC-AE, fresh processes): peak
              memory, time, max |Δ|.                                                          (tiling.py)
8. compile  — ours with the core's torch.compile switch against eager ours (only with --compile).
                                                                                              (compare.py)

This file parses the arguments and runs the sections; targets.py writes the summary table and the verdicts,
common.py holds what they share. Run `python -m benchmarks --help`. `--quick` is B-512 only with few steps
(for CPU); `--tiny` runs every section on the tiny test models in seconds (what tests/test_benchmarks.py does).
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

import torch

from .captioning import bench_captioning
from .common import PROBE_TAG, Report, Settings, machine_info
from .compare import bench_compare, bench_compile, bench_repeat
from .cuda_memory import bench_cuda_memory
from .load import bench_load, probe_load
from .placement import bench_placement
from .targets import summary_table, target_lines
from .tiling import bench_tiling, probe_tiling


SECTIONS = ("compare", "repeat", "load", "placement", "cuda", "captioning", "tiling", "compile")
VARIANT_ALIASES = {"B-512": "OpenUni-B-512", "L-512": "OpenUni-L-512", "L-1024": "OpenUni-L-1024"}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=None, help="comma list of B-512, L-512, L-1024 (default: all; B-512 with --quick)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default 20 on CUDA, 4 on CPU, 2 with --quick)")
    p.add_argument("--cfg", type=float, default=4.5)
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default: the variant's)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="fp32, bf16, fp16 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed image pairs per variant (default 3, 2 with --quick)")
    p.add_argument("--only", default=None, help=f"comma list of sections: {', '.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="B-512 only, 2 steps: a CPU-sized run")
    p.add_argument("--tiny", action="store_true", help="the tiny test models (seconds; what the tests run)")
    p.add_argument("--compile", action="store_true", help="also measure ours with torch.compile on the transformer")
    p.add_argument("--tiling-size", type=int, default=2048, help="image side for the tiling section")
    p.add_argument("--tiling-dtype", default="bf16")
    p.add_argument("--cache", default=None, help="where the random real-size models are written (default bench_cache/)")
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    p.add_argument("--quiet-wait", type=float, default=None,
                   help="on a shared CPU machine, wait up to this many seconds before each timed run for other "
                        "processes to go quiet (default 300 on CPU, 0 with --tiny or on CUDA)")
    p.add_argument("--force-naive", action="store_true",
                   help="run the naive load baseline even where it may not fit in RAM (it is skipped when its "
                        "estimate exceeds 80%% of available RAM; run it under a memory cgroup)")
    p.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    for k in ("variant", "checkpoint", "mllm", "sana", "vae", "mllm-hf", "loader", "mode", "what", "out"):
        p.add_argument(f"--{k}", default=None, help=argparse.SUPPRESS)
    p.add_argument("--tile", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run(args) -> Report:
    from openuni_core.devices import resolve_device, resolve_dtype
    from openuni_core.loading import load_openuni

    from .models import DEFAULT_CACHE, ensure_internvl_hf, ensure_models, tiny_models

    device = resolve_device(args.device)
    dtype_name = args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    resolve_dtype(dtype_name, device)
    cache = Path(args.cache) if args.cache else DEFAULT_CACHE
    if args.tiny:
        names = ["tiny-B"]
    elif args.variants:
        names = [VARIANT_ALIASES.get(v.strip(), v.strip()) for v in args.variants.split(",") if v.strip()]
    else:
        names = ["OpenUni-B-512"] if args.quick else list(VARIANT_ALIASES.values())
    steps = args.steps or (2 if (args.quick or args.tiny) else (20 if device.type == "cuda" else 4))
    repeats = args.repeats or (2 if (args.quick or args.tiny) else 3)
    sections = set(args.only.split(",")) if args.only else set(SECTIONS) - {"compile"} | ({"compile"} if args.compile else set())
    if device.type != "cuda":
        sections.discard("cuda")
    report = Report(machine_info(device))
    h = report.header
    report.say(f"# OpenUni benchmark — {h['device_name']} ({h['device']}), {h['cpu_cores']} CPU cores, {h['ram_gb']} GiB RAM, "
               f"{h['platform']}")
    report.say(f"# python {h['python']}, torch {h['torch']} ({h['torch_threads']} threads), diffusers {h['diffusers']}, "
               f"transformers {h['transformers']}, flash-attn importable: {h['flash_attn_importable']}, "
               f"load average at start {h.get('load_average')}")
    report.say(f"# {dtype_name}, {steps} steps, cfg {args.cfg}, variants {', '.join(names)}, sections {', '.join(sorted(sections))}")
    quiet = args.quiet_wait if args.quiet_wait is not None else (0 if args.tiny or device.type == "cuda" else 300)
    captioned = set()  # InternVL3 folders already benchmarked (L-512 and L-1024 share InternVL3-2B)
    for name in names:
        mllm_only = sections & {"compare", "repeat", "compile", "placement", "load", "cuda"} == set()
        paths = tiny_models(cache / "tiny") if args.tiny else ensure_models(name, cache, mllm_only=mllm_only)
        if paths.tokenizer_note:
            report.say(f"[{name}] tokenizer: {paths.tokenizer_note}")
        s = Settings(steps=steps, cfg=args.cfg, size=args.size or _native(name), repeats=repeats, dtype=dtype_name,
                     device=device, quiet_wait=quiet, force_naive=args.force_naive)
        res = report.results.setdefault(name, {})
        if sections & {"compare", "repeat", "compile", "placement"}:
            model = load_openuni(paths.checkpoint, paths.mllm, paths.sana, paths.vae, dtype=dtype_name, device=device)
            res["attention"] = str(getattr(model.mllm.config, "_attn_implementation", "?"))
            report.say(f"[{name}] LLM attention kernel: {res['attention']}")
            if "compare" in sections:
                res["compare"] = bench_compare(model, name, s, report)
            if "repeat" in sections:
                res["repeat"] = bench_repeat(model, name, s, report)
            if "compile" in sections:
                res["compile"] = bench_compile(model, name, s, report)
            if "placement" in sections:
                res["placement"] = bench_placement(model, name, report)
            del model
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if "captioning" in sections and paths.mllm not in captioned:
            captioned.add(paths.mllm)
            res["captioning"] = bench_captioning(paths.mllm, name, s, report, new_tokens=4 if args.tiny else 32)
        if "load" in sections:
            res["load"] = bench_load(paths, name, s, report,
                                     ensure_hf=lambda: ensure_internvl_hf(cache, _mllm_name(name), seed=0))
        if "cuda" in sections:
            res["cuda"] = bench_cuda_memory(paths, name, s, [s.size, 2 * s.size], report)
    if "tiling" in sections:
        vae_dir = (tiny_models(cache / "tiny").vae if args.tiny else ensure_models(names[0], cache).vae)
        size = min(args.tiling_size, 1024) if args.tiny else args.tiling_size
        report.results["tiling"] = bench_tiling(vae_dir, "DC-AE", args.tiling_dtype, device, size, report,
                                                quiet_wait=quiet)
    report.say("")
    for line in summary_table(report) + [""] + target_lines(report):
        report.say(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": report.header, "results": report.results}, indent=2, default=str))
    return report


def _native(name: str) -> int:
    from openuni_core.variants import VARIANTS

    return VARIANTS[name].pixels


def _mllm_name(name: str) -> str:
    from .models import BENCH_VARIANTS

    return BENCH_VARIANTS[name].mllm


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._probe:
        fn = {"load": probe_load, "tiling": probe_tiling}[args._probe]
        print(PROBE_TAG + json.dumps(fn(args)), flush=True)
        return 0
    run(args)
    return 0
