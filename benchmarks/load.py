"""Load: disk to ready-to-sample, ours against a naive baseline (section `load`).

Each loader runs in a fresh process (`probe_load`, through `common.run_probe`), after every file it reads has
been read once, so both start from the same warm page cache. Ours is the core's `load_openuni`; the naive
baseline (`naive_load`) is `from_pretrained` of each part in fp32, the checkpoint read whole with `torch.load`,
then cast and moved. "Ready" means every weight is resident: the probe reads each tensor once after the loader
returns. Figures: seconds, and peak RAM over the pre-load baseline (RSS and anonymous memory, from
`MemorySampler`) against the bytes of the loaded weights; ours/naive. The naive baseline is skipped when its
estimate exceeds 80 % of the available RAM, unless --force-naive.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import torch

from .common import MemorySampler, Report, Settings, gb, probe_path, run_probe, sync, wait_for_quiet


def _module_bytes(*modules) -> int:
    return sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())


def _available_ram() -> int | None:
    try:
        import psutil

        return psutil.virtual_memory().available
    except ImportError:
        return None


def _warm_files(*paths: Path) -> None:
    """Read every weight file once so every loader starts from the same (warm) page cache."""
    for p in paths:
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        for f in files:
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def naive_load(paths, dtype: torch.dtype, device: torch.device) -> list[torch.nn.Module]:
    """The baseline: `from_pretrained` of each part in fp32, the checkpoint read whole, then cast and move."""
    from diffusers import AutoencoderDC, SanaTransformer2DModel
    from transformers import InternVLForConditionalGeneration, SiglipTextConfig
    from transformers.models.siglip.modeling_siglip import SiglipEncoder

    from openuni_core import compat
    from openuni_core.internvl import load_tokenizer
    from openuni_core.variants import VARIANTS

    mllm = InternVLForConditionalGeneration.from_pretrained(str(paths.mllm_hf), **compat.dtype_kwargs(torch.float32))
    load_tokenizer(paths.mllm_hf)
    transformer = SanaTransformer2DModel.from_pretrained(str(paths.sana / "transformer"), torch_dtype=torch.float32)
    vae = AutoencoderDC.from_pretrained(str(paths.vae), torch_dtype=torch.float32)
    sd = torch.load(str(paths.checkpoint), map_location="cpu", weights_only=True)
    hidden = sd["meta_queries"].shape[1]
    layers = len({k.split(".")[2] for k in sd if k.startswith("connector.layers.")})
    mlp = sd["connector.layers.0.mlp.fc1.weight"].shape[0]
    connector = SiglipEncoder(SiglipTextConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                                               num_attention_heads=VARIANTS[paths.variant].connector_heads,
                                               hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                                               bos_token_id=None, eos_token_id=None, pad_token_id=None))
    connector.load_state_dict({k[len("connector."):]: v for k, v in sd.items() if k.startswith("connector.")})
    projector = torch.nn.Linear(hidden, sd["projector.weight"].shape[0])
    projector.load_state_dict({"weight": sd["projector.weight"], "bias": sd["projector.bias"]})
    queries = torch.nn.Parameter(sd["meta_queries"].float())
    transformer.load_state_dict({k[len("transformer."):]: v for k, v in sd.items() if k.startswith("transformer.")},
                                strict=False)
    del sd
    parts = [mllm, transformer, vae, connector, projector]
    for p in parts:
        p.to(dtype=dtype, device=device).eval().requires_grad_(False)
    queries.data = queries.data.to(dtype=dtype, device=device)
    return parts


def probe_load(a) -> dict:
    import diffusers  # noqa: F401  (imports are part of the baseline, not of the load)
    import transformers  # noqa: F401

    from openuni_core.devices import resolve_dtype
    from openuni_core.loading import load_openuni

    from .models import BenchPaths

    paths = BenchPaths(a.variant, Path(a.checkpoint), Path(a.mllm), Path(a.sana), Path(a.vae),
                       mllm_hf=Path(a.mllm_hf) if a.mllm_hf else None)
    device = torch.device(a.device)
    dtype = resolve_dtype(a.dtype, device)
    gc.collect()
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        if a.loader == "ours":
            model = load_openuni(paths.checkpoint, paths.mllm, paths.sana, paths.vae, dtype=a.dtype, device=device)
            parts = [model.mllm, model.bridge, model.transformer, model.vae]
        else:
            parts = naive_load(paths, dtype, device)
        sync(device)
        seconds = time.perf_counter() - t0
        # Weights may still be lazily mapped from the file (safetensors/mmap): read every byte once so
        # "ready to sample" means resident, and the memory peak includes them.
        with torch.no_grad():
            for m in parts:
                for t in m.state_dict().values():
                    t.sum()
        sync(device)
        resident = time.perf_counter() - t0
    return {"loader": a.loader, "dtype": a.dtype, "seconds": resident, "seconds_until_return": seconds,
            "rss_peak_delta": mem.delta_bytes("VmRSS"),
            "anon_peak_delta": mem.delta_bytes("RssAnon"), "weight_bytes": _module_bytes(*parts),
            "vram_peak": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0}


def bench_load(paths, name: str, s: Settings, report: Report, *, tries: int = 1, ensure_hf=None) -> dict:
    """ensure_hf: writes (once) and returns the -hf twin the naive baseline loads, when paths lack one."""
    res: dict[str, dict] = {}
    loaders = ["naive", "ours"]
    # The naive baseline holds an fp32 copy of everything (~2.4× the bf16 bytes, measured on B-512) plus
    # the whole checkpoint: on a small shared machine that can push other processes into the OOM killer.
    on_disk = sum(paths.weight_bytes().values())
    need = 2.6 * on_disk * (2 if s.dtype == "fp32" else 1)
    avail = _available_ram()
    if avail is not None and need > 0.8 * avail and not s.force_naive:
        loaders = ["ours"]
        report.say(f"[{name}] load: naive baseline skipped, it would need ~{gb(need)} with {gb(avail)} available")
    if "naive" in loaders and paths.mllm_hf is None:
        paths.mllm_hf = ensure_hf()
    args = ["load", "--variant", name, "--checkpoint", probe_path(paths.checkpoint), "--mllm", probe_path(paths.mllm),
            "--sana", probe_path(paths.sana), "--vae", probe_path(paths.vae), "--mllm-hf", probe_path(paths.mllm_hf),
            "--dtype", s.dtype, "--device", str(s.device)]
    for _ in range(tries):
        for loader in loaders:
            # Before each loader: the naive one's RAM use can push the files out of the page cache.
            _warm_files(paths.checkpoint, paths.sana / "transformer", paths.vae,
                        *([paths.mllm_hf] if loader == "naive" else [paths.mllm]))
            if s.quiet_wait:
                wait_for_quiet(s.quiet_wait)
            r = run_probe(args + ["--loader", loader])
            if loader not in res or r["seconds"] < res[loader]["seconds"]:
                res[loader] = r
    o, n = res["ours"], res.get("naive")
    ratio = o["seconds"] / n["seconds"] if n else None
    for who in loaders:
        r = res[who]
        report.say(f"[{name}] load {s.dtype} → {s.device.type}, {who:5s}: {r['seconds']:.2f} s to resident weights "
                   f"({r['seconds_until_return']:.2f} s until the loader returned); peak RAM over baseline "
                   f"RSS {gb(r['rss_peak_delta'])} ({r['rss_peak_delta'] / r['weight_bytes']:.2f}× weights), anonymous "
                   f"{gb(r['anon_peak_delta'])} ({r['anon_peak_delta'] / r['weight_bytes']:.2f}×); weights {gb(r['weight_bytes'])}")
    if ratio is None:
        return {"ours": o, "naive": None, "ratio": None}
    report.say(f"[{name}] load ours/naive {ratio:.2f}")
    return {"ours": o, "naive": n, "ratio": ratio}
