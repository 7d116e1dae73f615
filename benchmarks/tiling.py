"""Tiling: DC-AE decode and encode, tiled against untiled (section `tiling`).

Each run is a fresh process (`probe_tiling`, through `common.run_probe`) on a real-size DC-AE at 2048² by
default: a random latent to decode, or a smooth random image to encode. Figures: seconds, peak RAM over the
baseline (RSS and anonymous), peak VRAM on CUDA, and max |Δ| between the tiled and untiled outputs (written to
temporary files). An untiled run that fails (out of memory) is reported, not fatal: that is what tiling is for.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import torch

from .common import MemorySampler, Report, gb, probe_path, run_probe, sync, wait_for_quiet


def probe_tiling(a) -> dict:
    from diffusers import AutoencoderDC

    from openuni_core import vae as vae_ops
    from openuni_core.devices import resolve_dtype

    device = torch.device(a.device)
    dtype = resolve_dtype(a.dtype, device)
    vae = AutoencoderDC.from_pretrained(a.vae, torch_dtype=dtype).to(device).eval().requires_grad_(False)
    tiled = a.mode == "tiled"
    kw = {"tile_size": a.tile} if a.tile else {}
    n = a.size // 32
    gen = torch.Generator("cpu").manual_seed(0)
    if a.what == "decode":
        x = torch.randn(1, 32, n, n, generator=gen)
        fn = lambda: vae_ops.decode(vae, x, tiled=tiled, **kw)  # noqa: E731
    else:  # a smooth random image (noise would be an unusually hard input)
        x = torch.nn.functional.interpolate(torch.rand(1, 3, n, n, generator=gen), size=(a.size, a.size),
                                            mode="bilinear").permute(0, 2, 3, 1).contiguous()
        fn = lambda: vae_ops.encode(vae, x, tiled=tiled, **kw)  # noqa: E731
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        y = fn()
        sync(device)
        seconds = time.perf_counter() - t0
    if a.out:
        torch.save(y.half() if a.what == "decode" else y, a.out)
    return {"mode": a.mode, "what": a.what, "seconds": seconds, "rss_peak_delta": mem.delta_bytes("VmRSS"),
            "anon_peak_delta": mem.delta_bytes("RssAnon"),
            "vram_peak": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0}


def bench_tiling(vae_dir: Path, name: str, dtype: str, device: torch.device, size: int, report: Report,
                 *, what=("decode", "encode"), tile: int | None = None, workdir: Path | None = None,
                 quiet_wait: float = 0.0) -> dict:
    workdir = Path(workdir or "/tmp").absolute()
    out = {}
    for w in what:
        res = {}
        files = {mode: workdir / f"openuni_bench_tiling_{w}_{mode}_{os.getpid()}.pt" for mode in ("untiled", "tiled")}
        for mode, f in files.items():
            args = ["tiling", "--vae", probe_path(vae_dir), "--mode", mode, "--what", w, "--size", str(size),
                    "--dtype", dtype, "--device", str(device), "--out", str(f)] + (["--tile", str(tile)] if tile else [])
            if quiet_wait:
                wait_for_quiet(quiet_wait)
            try:
                res[mode] = run_probe(args)
            except RuntimeError as e:  # e.g. out of memory untiled: that is the point of tiling
                res[mode] = {"error": str(e)[-300:]}
        fu, ft = files["untiled"], files["tiled"]
        if fu.exists() and ft.exists():
            res["max_abs_diff"] = float((torch.load(fu).float() - torch.load(ft).float()).abs().max())
        for f in (fu, ft):
            f.unlink(missing_ok=True)
        for mode in ("untiled", "tiled"):
            r = res[mode]
            if "error" in r:
                report.say(f"[{name}] DC-AE {w} {size}² {dtype} {mode}: failed ({r['error'].splitlines()[-1]})")
                continue
            vram = f", peak VRAM {gb(r['vram_peak'])}" if device.type == "cuda" else ""
            report.say(f"[{name}] DC-AE {w} {size}² {dtype} {mode:7s}: {r['seconds']:.1f} s, peak RAM over baseline RSS "
                       f"{gb(r['rss_peak_delta'])}, anonymous {gb(r['anon_peak_delta'])}{vram}")
        if "max_abs_diff" in res:
            report.say(f"[{name}] DC-AE {w} {size}² {dtype}: max|Δ| tiled vs untiled {res['max_abs_diff']:.2e}")
        out[w] = res
    return out
