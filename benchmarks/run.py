"""The benchmark: `python -m benchmarks`, run from the repository root (results are written up in BENCHMARKS.md).

On real-size models with random weights (written once by `benchmarks/models.py`), on the current device:

1. compare  — the reference path (what upstream OpenUni's inference does: one padded [prompt, CFG prompt]
              LLM batch with the meta queries appended, connector + projector, then diffusers'
              `SanaPipeline` with the DPM-Solver++ scheduler and the DC-AE decode) against our path (the
              core exactly as the nodes call it: `load_openuni`, `encode_pair`, `sample`, `decode`), same
              weights (shared modules, no second copy), dtype, steps, cfg, size and CPU noise. Seconds per
              image, ours/reference, and max |Δ| between the two images.
2. repeat   — a run with the same prompt again (ComfyUI re-running with a new seed): LLM forwards, time.
3. load     — disk to ready-to-sample, ours vs a naive `from_pretrained` of each part in fp32 then cast,
              each in a fresh process: seconds and peak process RAM (RSS, and anonymous memory) over the
              pre-load baseline, against the loaded weights' bytes.
4. placement — the weights each memory policy puts on the accelerator at its worst moment (computed from
              the loaded parameters, so it runs anywhere).
5. cuda     — peak VRAM and time per memory policy (all on GPU, MLLM offload, sequential offload), per
              variant and size; only on CUDA.
6. tiling   — DC-AE decode/encode at 2048² tiled vs untiled (real-size DC-AE, fresh processes): peak
              memory, time, max |Δ|.
7. compile  — ours with the core's torch.compile switch against eager ours (only with --compile).

Run `python -m benchmarks --help`. `--quick` is B-512 only with few steps (for CPU);
`--tiny` runs every section on the tiny test models in seconds (what tests/test_benchmarks.py does).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

PROMPTS = [
    "a photo of a red fox sitting in fresh snow at sunrise, soft golden light, highly detailed fur",
    "an astronaut riding a horse on the moon, earth in the sky, cinematic lighting",
    "a cozy wooden cabin by a misty lake in autumn, oil painting",
    "a bowl of ramen with a soft boiled egg, steam rising, food photography, shallow depth of field",
    "a futuristic city at night with neon signs reflected in the rain-soaked streets",
    "a watercolor portrait of an old sailor with a white beard and a blue cap",
    "three red apples on a wooden table next to a glass of milk",
    "a dragon made of autumn leaves flying over a mountain range",
]
FP32_IMAGE_TOLERANCE = 1e-3
PROBE_TAG = "OPENUNI_BENCH_PROBE "
ROOT = Path(__file__).resolve().parents[1]  # the repository root (where `python -m benchmarks` runs)


# ----- machine and measurement helpers --------------------------------------------------------------------
def machine_info(device: torch.device) -> dict:
    import diffusers
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        ram = psutil.virtual_memory().total
    except ImportError:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        import flash_attn  # noqa: F401

        flash = True
    except ImportError:
        flash = False
    info = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
        "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "ram_gb": round(ram / 2**30, 1),
        "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "device": str(device), "flash_attn_importable": flash,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_jiffies() -> tuple[int, int, int] | None:
    """(busy jiffies of the whole machine, all jiffies, jiffies of this process) from /proc."""
    try:
        vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return sum(vals) - vals[3] - vals[4], sum(vals), int(own[11]) + int(own[12])
    except (OSError, IndexError, ValueError):
        return None


def others_cpu_share(start, end) -> float | None:
    """Fraction of the machine's CPU capacity used by OTHER processes between two `_cpu_jiffies()`."""
    if start is None or end is None or end[1] <= start[1]:
        return None
    return max(0.0, ((end[0] - start[0]) - (end[2] - start[2])) / (end[1] - start[1]))


def wait_for_quiet(max_wait: float, threshold: float = 0.1, window: float = 2.0) -> float | None:
    """On a shared machine, wait (up to max_wait s) until other processes use < threshold of the CPUs."""
    deadline = time.perf_counter() + max_wait
    share = None
    while True:
        a = _cpu_jiffies()
        time.sleep(window)
        share = others_cpu_share(a, _cpu_jiffies())
        if share is None or share < threshold or time.perf_counter() >= deadline:
            return share


class Stopwatch:
    """Wall and CPU seconds of named stages (CUDA-synchronised at each boundary), and how busy the
    machine was with other processes meanwhile (timings on a shared machine mean little without it)."""

    def __init__(self, device: torch.device):
        self.device, self.stages = device, {}
        _sync(device)
        self.j0 = _cpu_jiffies()
        self.t0 = self.last = time.perf_counter()
        self.c0 = time.process_time()

    def lap(self, name: str) -> None:
        _sync(self.device)
        now = time.perf_counter()
        self.stages[name] = now - self.last
        self.last = now
        self.others = others_cpu_share(self.j0, _cpu_jiffies())

    @property
    def wall(self) -> float:
        return self.last - self.t0

    @property
    def cpu(self) -> float:
        return time.process_time() - self.c0


def _status_kb() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0])
    except OSError:
        import psutil

        out["VmRSS"] = psutil.Process().memory_info().rss // 1024
    return out


class MemorySampler:
    """Peak RSS and anonymous (private) memory of this process over a block, sampled every few ms.

    RSS counts file pages that are merely mapped (safetensors/mmap'd checkpoints: the page cache, which the
    kernel can drop); anonymous memory is what the process really owns. Both are reported.
    """

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, {}, threading.Event()
        self.base = _status_kb()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            for k, v in _status_kb().items():
                self.peak[k] = max(self.peak.get(k, 0), v)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for k, v in _status_kb().items():
            self.peak[k] = max(self.peak.get(k, 0), v)
        try:
            import resource

            self.peak["VmRSS"] = max(self.peak.get("VmRSS", 0), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        except ImportError:
            pass

    def delta_bytes(self, key: str) -> int:
        return (self.peak.get(key, 0) - self.base.get(key, 0)) * 1024


class ForwardCounter:
    """Counts forward calls of a module (the LLM), whoever makes them."""

    def __init__(self, module: torch.nn.Module):
        self.count = 0
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.count += 1

    def close(self):
        self._handle.remove()


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _module_bytes(*modules) -> int:
    return sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())


# ----- the reference path: upstream OpenUni's inference, written independently -----------------------------
def reference_connector(bridge, heads: int, x: torch.Tensor) -> torch.Tensor:
    """Connector (pre-LN encoder layers, no final norm) then projector, from the shared weights."""
    import torch.nn.functional as F

    for layer in bridge.connector.layers:
        b, n, d = x.shape
        h = F.layer_norm(x, (d,), layer.layer_norm1.weight, layer.layer_norm1.bias, 1e-6)
        att = layer.self_attn
        q, k, v = (F.linear(h, p.weight, p.bias).view(b, n, heads, d // heads).transpose(1, 2)
                   for p in (att.q_proj, att.k_proj, att.v_proj))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + F.linear(a, att.out_proj.weight, att.out_proj.bias)
        h = F.layer_norm(x, (d,), layer.layer_norm2.weight, layer.layer_norm2.bias, 1e-6)
        x = x + F.linear(F.gelu(F.linear(h, layer.mlp.fc1.weight, layer.mlp.fc1.bias), approximate="tanh"),
                         layer.mlp.fc2.weight, layer.mlp.fc2.bias)
    return F.linear(x, bridge.projector.weight, bridge.projector.bias)


@torch.no_grad()
def reference_conditioning(model, prompt: str, cfg_prompt: str | None = None) -> torch.Tensor:
    """[prompt, CFG prompt] → [2, 256, caption_channels], as upstream `prepare_text_conditions` + `generate`."""
    from torch.nn.utils.rnn import pad_sequence

    tok = model.tokenizer
    device = next(model.bridge.parameters()).device
    cfg_text = "Generate an image." if cfg_prompt is None else f"Generate an image: {cfg_prompt.strip()}"
    texts = [f"Generate an image: {prompt.strip()}", cfg_text]
    ids = [torch.tensor(tok.encode(f"<|im_start|>user\n{t}<|im_end|>\n<|im_start|>assistant\n<img>",
                                   add_special_tokens=True)) for t in texts]
    lens = [len(i) for i in ids]
    input_ids = pad_sequence(ids, batch_first=True, padding_value=tok.pad_token_id).to(device)
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for i, n in enumerate(lens):
        mask[i, :n] = True
    llm = model.mllm.model.language_model  # the Qwen2 decoder (upstream: self.llm.model)
    queries = model.bridge.meta_queries
    n_q = queries.shape[0]
    embeds = torch.cat([model.mllm.get_input_embeddings()(input_ids), queries[None].expand(2, -1, -1)], dim=1)
    mask = torch.cat([mask, mask.new_ones(2, n_q)], dim=1)
    position_ids = torch.cumsum(mask, dim=1) - 1
    position_ids[position_ids < 0] = 0
    hidden = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False)
    hidden = hidden.last_hidden_state[:, -n_q:]
    return reference_connector(model.bridge, model.variant.connector_heads, hidden.to(queries.dtype))


def cpu_noise(seed: int, shape) -> torch.Tensor:
    """ComfyUI's convention, drawn independently of the core: float32 noise from a CPU generator."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


@torch.no_grad()
def reference_generate(model, prompt: str, *, steps: int, cfg: float, width: int, height: int, seed: int):
    """Images [1,H,W,3] in 0..1 and a Stopwatch, the way upstream OpenUni makes them."""
    from diffusers import DPMSolverMultistepScheduler, SanaPipeline

    device = model.transformer.device
    watch = Stopwatch(device)
    cond = reference_conditioning(model, prompt)
    watch.lap("conditioning")
    pipe = SanaPipeline(tokenizer=model.tokenizer, text_encoder=None, vae=model.vae, transformer=model.transformer,
                        scheduler=DPMSolverMultistepScheduler.from_config(model.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    ones = torch.ones(1, cond.shape[1], dtype=torch.bool, device=device)
    latents = cpu_noise(seed, (1, 32, height // 32, width // 32))
    out = pipe(prompt=None, negative_prompt=None, height=height, width=width, prompt_embeds=cond[:1].to(device),
               prompt_attention_mask=ones, negative_prompt_embeds=cond[1:].to(device),
               negative_prompt_attention_mask=ones, num_inference_steps=steps, guidance_scale=cfg, latents=latents,
               complex_human_instruction=None, output_type="latent", use_resolution_binning=False).images
    watch.lap("sampling")
    vae = model.vae
    x = vae.decode(out.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    image = ((x.float() + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).cpu()
    watch.lap("decode")
    return image, watch


def ours_generate(model, prompt: str, *, steps: int, cfg: float, width: int, height: int, seed: int):
    """Images and a Stopwatch, exactly the calls the nodes make."""
    device = model.transformer.device
    watch = Stopwatch(device)
    pos, neg = model.encode_pair(prompt)  # what the encode node calls: uncached texts in one LLM batch
    watch.lap("conditioning")
    latents = model.sample(pos, neg, width=width, height=height, steps=steps, cfg=cfg, seed=seed)
    watch.lap("sampling")
    image = model.decode(latents)
    watch.lap("decode")
    return image, watch


# ----- sections ---------------------------------------------------------------------------------------------
@dataclass
class Settings:
    steps: int
    cfg: float
    size: int
    repeats: int
    dtype: str
    device: torch.device
    quiet_wait: float = 0.0  # seconds to wait for other processes to go quiet before each timed run
    max_others: float = 0.10  # a timed run during which other processes used more of the CPUs is run again...
    max_tries: int = 3  # ...up to this many times (the least disturbed attempt is kept)
    force_naive: bool = False  # run the naive load baseline even where the RAM estimate says it may not fit

    @property
    def image_kwargs(self) -> dict:
        return dict(steps=self.steps, cfg=self.cfg, width=self.size, height=self.size)


def timed_run(fn, s: Settings, model=None):
    """fn() → (result, Stopwatch), repeated while other processes disturbed it (shared CPU machines).

    model: its prompt cache is restored before a repeat, so a repeated run does the same work again.
    """
    best = None
    cache = getattr(model, "_cache", None)
    saved = dict(cache) if cache is not None else None
    for attempt in range(max(1, s.max_tries if s.quiet_wait else 1)):
        if attempt and cache is not None:
            cache.clear()
            cache.update(saved)
        if s.quiet_wait:
            wait_for_quiet(s.quiet_wait, threshold=s.max_others / 2)
        out = fn()
        others = getattr(out[1], "others", None)
        if best is None or (others is not None and others < best[1].others):
            best = out
        if others is None or others <= s.max_others:
            break
    return best


@dataclass
class Report:
    header: dict
    lines: list[str] = field(default_factory=list)
    results: dict = field(default_factory=dict)

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


def _counting_llm(llm: ForwardCounter, fn, model, prompt: str, **kw):
    """A `timed_run` attempt: fn(model, prompt, **kw), its Stopwatch also recording the LLM forwards it made."""
    def attempt():
        before = llm.count
        img, watch = fn(model, prompt, **kw)
        watch.llm_forwards = llm.count - before
        return img, watch
    return attempt


def bench_compare(model, name: str, s: Settings, report: Report) -> dict:
    """Reference vs ours, alternating (so drifting machine load hits both alike)."""
    kw = s.image_kwargs
    llm = ForwardCounter(model.mllm.model.language_model)
    tag = f"[{name} {s.dtype} {s.device.type} {s.size}² steps={s.steps} cfg={s.cfg}]"
    try:
        # Warm-up pair (first calls pay one-off costs: kernel selection, the cached default negative).
        ref_img, _ = reference_generate(model, PROMPTS[0], seed=1, **kw)
        our_img, w = ours_generate(model, PROMPTS[0], seed=1, **kw)
        diffs = [float((ref_img - our_img).abs().max())]
        report.say(f"{tag} warm-up: ours {w.wall:.2f} s (incl. the one-off negative encode), max|Δimage| {diffs[0]:.2e}")
        ref_runs, our_runs = [], []
        for k in range(s.repeats):
            prompt = PROMPTS[1 + k % (len(PROMPTS) - 1)] + f" #{k}"  # a new prompt: no cache hit for ours
            order = (("ref", "ours") if k % 2 == 0 else ("ours", "ref"))
            imgs = {}
            for who in order:
                fn = reference_generate if who == "ref" else ours_generate
                img, watch = timed_run(_counting_llm(llm, fn, model, prompt, seed=100 + k, **kw), s, model)
                imgs[who] = img
                (ref_runs if who == "ref" else our_runs).append((watch, watch.llm_forwards))
            diffs.append(float((imgs["ref"] - imgs["ours"]).abs().max()))
    finally:
        llm.close()
    ref_t = statistics.median(w.wall for w, _ in ref_runs)
    our_t = statistics.median(w.wall for w, _ in our_runs)
    ratio = statistics.median(o.wall / r.wall for (r, _), (o, _) in zip(ref_runs, our_runs))
    best_ratio = min(w.wall for w, _ in our_runs) / min(w.wall for w, _ in ref_runs)
    ref_cpu = statistics.median(w.cpu for w, _ in ref_runs)
    our_cpu = statistics.median(w.cpu for w, _ in our_runs)

    def stages(runs):
        keys = runs[0][0].stages
        return {k: round(statistics.median(w.stages[k] for w, _ in runs), 3) for k in keys}

    others = [w.others for w, _ in ref_runs + our_runs if w.others is not None]
    res = {
        "reference_s_per_image": ref_t, "ours_s_per_image": our_t, "ratio": ratio, "ratio_of_best_runs": best_ratio,
        "reference_runs_s": [round(w.wall, 3) for w, _ in ref_runs], "ours_runs_s": [round(w.wall, 3) for w, _ in our_runs],
        "others_cpu_share_max": max(others) if others else None,
        "others_cpu_share_median": statistics.median(others) if others else None,
        "reference_cpu_s": ref_cpu, "ours_cpu_s": our_cpu, "cpu_ratio": our_cpu / ref_cpu,
        "reference_stages": stages(ref_runs), "ours_stages": stages(our_runs),
        "reference_llm_forwards_per_image": statistics.median(n for _, n in ref_runs),
        "ours_llm_forwards_per_image": statistics.median(n for _, n in our_runs),
        "max_abs_image_diff": max(diffs), "runs": s.repeats, "dtype": s.dtype, "steps": s.steps, "size": s.size,
        "unclipped_fraction": float(((our_img > 0) & (our_img < 1)).float().mean()),
    }
    report.say(f"{tag} reference {ref_t:.3f} s/image ({_fmt_stages(res['reference_stages'])}; "
               f"{res['reference_llm_forwards_per_image']:g} LLM forward)")
    report.say(f"{tag} ours      {our_t:.3f} s/image ({_fmt_stages(res['ours_stages'])}; "
               f"{res['ours_llm_forwards_per_image']:g} LLM forward)")
    verdict = ""
    if model.dtype == torch.float32:
        verdict = " (OK ≤ 1e-3)" if res["max_abs_image_diff"] <= FP32_IMAGE_TOLERANCE else " (FAIL > 1e-3)"
    busy = (f"; other processes used {100 * res['others_cpu_share_median']:.0f}% (max "
            f"{100 * res['others_cpu_share_max']:.0f}%) of the CPUs meanwhile" if others else "")
    report.say(f"{tag} ours/reference {ratio:.3f} (median of {s.repeats} paired runs; best run / best run "
               f"{best_ratio:.3f}); "
               f"max|Δimage| {res['max_abs_image_diff']:.2e}{verdict} over {s.repeats + 1} image pairs{busy}")
    return res


def _fmt_stages(st: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in st.items())


def bench_repeat(model, name: str, s: Settings, report: Report) -> dict:
    """Same prompt again, new seed: what ComfyUI does when only the seed changes."""
    kw = s.image_kwargs
    llm = ForwardCounter(model.mllm.model.language_model)
    try:
        ours_generate(model, PROMPTS[0], seed=7, **kw)  # make sure the prompt has been seen
        _, w = timed_run(_counting_llm(llm, ours_generate, model, PROMPTS[0], seed=8, **kw), s, model)
        _, rw = timed_run(_counting_llm(llm, reference_generate, model, PROMPTS[0], seed=8, **kw), s, model)
    finally:
        llm.close()
    res = {"ours_llm_forwards": w.llm_forwards, "ours_conditioning_s": w.stages["conditioning"], "ours_s": w.wall,
           "reference_llm_forwards": rw.llm_forwards, "reference_conditioning_s": rw.stages["conditioning"],
           "reference_s": rw.wall, "ratio": w.wall / rw.wall}
    report.say(f"[{name}] repeat run, same prompt: ours {w.llm_forwards} LLM forwards, conditioning "
               f"{1000 * res['ours_conditioning_s']:.1f} ms, {w.wall:.2f} s/image; reference {rw.llm_forwards} LLM "
               f"forward (batch 2), conditioning {res['reference_conditioning_s']:.2f} s, {rw.wall:.2f} s/image; "
               f"ours/reference {res['ratio']:.3f}")
    return res


def bench_placement(model, name: str, report: Report) -> dict:
    """Bytes of weights each memory policy puts on the accelerator at its worst moment, from the loaded
    parameters (computed, so it runs anywhere; on CUDA the `cuda` section measures the real peaks).

    Mirrors OpenUniModel._use: offloaded parts are copied in only while used, and the MLLM encodes layer
    by layer (streaming.py) but captions whole.
    """
    from openuni_core.model import _param_bytes
    from openuni_core.streaming import largest_layer_bytes

    mllm, bridge = _param_bytes(model.mllm), _param_bytes(model.bridge)
    sana, vae = _param_bytes(model.transformer), _param_bytes(model.vae)
    layer = largest_layer_bytes(model.mllm, model.embedding_tables())
    encode = bridge + layer
    res = {
        "none": {"generate": mllm + bridge + sana + vae, "caption": mllm + bridge + sana + vae},
        "mllm": {"generate": sana + vae + encode, "caption": sana + vae + mllm + bridge},
        "sequential": {"generate": max(encode, sana, vae), "caption": mllm + bridge},
    }
    report.say(f"[{name}] weights: MLLM {_gb(mllm)}, connector {_gb(bridge)}, SANA {_gb(sana)}, DC-AE {_gb(vae)}; "
               f"largest streamed MLLM layer {_gb(layer)}")
    for policy, r in res.items():
        report.say(f"[{name}] weights on the device at most, policy {policy:10s}: generating {_gb(r['generate'])}, "
                   f"captioning {_gb(r['caption'])} (computed; activations and the CUDA context come on top)")
    return res


def bench_compile(model, name: str, s: Settings, report: Report) -> dict:
    """Ours with the core's `compile` switch on (SANA transformer under torch.compile), against eager ours."""
    kw = s.image_kwargs
    eager, compiled = [], []
    try:
        model.compile = True
        t0 = time.perf_counter()
        ours_generate(model, PROMPTS[0], seed=1, **kw)  # the first call compiles
        warm = time.perf_counter() - t0
        diffs = []
        for k in range(s.repeats):
            prompt = PROMPTS[1 + k % (len(PROMPTS) - 1)] + f" #{k}"
            imgs = {}
            for on in ((True, False) if k % 2 == 0 else (False, True)):
                model.compile = on
                if s.quiet_wait:
                    wait_for_quiet(s.quiet_wait)
                imgs[on], w = ours_generate(model, prompt, seed=100 + k, **kw)
                (compiled if on else eager).append(w.wall)
            diffs.append(float((imgs[True] - imgs[False]).abs().max()))
    finally:
        model.compile = False
    res = {"ours_compiled_s_per_image": statistics.median(compiled), "ours_eager_s_per_image": statistics.median(eager),
           "compile_first_run_s": warm, "max_abs_image_diff_vs_eager": max(diffs)}
    report.say(f"[{name}] compile=True: {res['ours_compiled_s_per_image']:.3f} s/image vs eager "
               f"{res['ours_eager_s_per_image']:.3f} (first run, compiling: {warm:.1f} s); max|Δimage| vs eager "
               f"{res['max_abs_image_diff_vs_eager']:.2e}")
    return res


def bench_cuda_memory(paths, name: str, s: Settings, sizes: list[int], report: Report) -> dict:
    """Peak VRAM and seconds per image for each memory policy (fresh load per policy)."""
    from openuni_core.model import OFFLOAD, load_openuni

    out = {}
    for policy in OFFLOAD:
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
            report.say(f"[{name}] CUDA offload={policy} {size}²: peak VRAM {_gb(peak)} (reserved {_gb(reserved)}), "
                       f"{w.wall:.3f} s/image ({_fmt_stages(w.stages)})")
        del model
        gc.collect()
        torch.cuda.empty_cache()
    return out


# ----- fresh-process probes (load, tiling) -------------------------------------------------------------------
def _run_probe(args: list[str], *, timeout: float = 3600) -> dict:
    """`python -m benchmarks --_probe ARGS` in a fresh process: its one tagged JSON line, parsed.

    The probe runs with the repository root as its working directory and first on PYTHONPATH, so it finds this
    `benchmarks` package and `openuni_core` whatever the checkout folder is called (ARGS' paths are absolute).
    """
    cmd = [sys.executable, "-m", "benchmarks", "--_probe", *args]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith(PROBE_TAG):
            return json.loads(line[len(PROBE_TAG):])
    raise RuntimeError(f"probe {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def _abs(path) -> str:
    """A path argument for a probe (which runs in the repository root): absolute; "" for None."""
    return str(Path(path).absolute()) if path else ""


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


def _probe_load(a) -> dict:
    import diffusers  # noqa: F401  (imports are part of the baseline, not of the load)
    import transformers  # noqa: F401

    from .models import BenchPaths
    from openuni_core.model import load_openuni, resolve_dtype

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
        _sync(device)
        seconds = time.perf_counter() - t0
        # Weights may still be lazily mapped from the file (safetensors/mmap): read every byte once so
        # "ready to sample" means resident, and the memory peak includes them.
        with torch.no_grad():
            for m in parts:
                for t in m.state_dict().values():
                    t.sum()
        _sync(device)
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
        report.say(f"[{name}] load: naive baseline skipped, it would need ~{_gb(need)} with {_gb(avail)} available")
    if "naive" in loaders and paths.mllm_hf is None:
        paths.mllm_hf = ensure_hf()
    args = ["load", "--variant", name, "--checkpoint", _abs(paths.checkpoint), "--mllm", _abs(paths.mllm),
            "--sana", _abs(paths.sana), "--vae", _abs(paths.vae), "--mllm-hf", _abs(paths.mllm_hf),
            "--dtype", s.dtype, "--device", str(s.device)]
    for _ in range(tries):
        for loader in loaders:
            # Before each loader: the naive one's RAM use can push the files out of the page cache.
            _warm_files(paths.checkpoint, paths.sana / "transformer", paths.vae,
                        *([paths.mllm_hf] if loader == "naive" else [paths.mllm]))
            if s.quiet_wait:
                wait_for_quiet(s.quiet_wait)
            r = _run_probe(args + ["--loader", loader])
            if loader not in res or r["seconds"] < res[loader]["seconds"]:
                res[loader] = r
    o, n = res["ours"], res.get("naive")
    ratio = o["seconds"] / n["seconds"] if n else None
    for who in loaders:
        r = res[who]
        report.say(f"[{name}] load {s.dtype} → {s.device.type}, {who:5s}: {r['seconds']:.2f} s to resident weights "
                   f"({r['seconds_until_return']:.2f} s until the loader returned); peak RAM over baseline "
                   f"RSS {_gb(r['rss_peak_delta'])} ({r['rss_peak_delta'] / r['weight_bytes']:.2f}× weights), anonymous "
                   f"{_gb(r['anon_peak_delta'])} ({r['anon_peak_delta'] / r['weight_bytes']:.2f}×); weights {_gb(r['weight_bytes'])}")
    if ratio is None:
        return {"ours": o, "naive": None, "ratio": None}
    report.say(f"[{name}] load ours/naive {ratio:.2f}")
    return {"ours": o, "naive": n, "ratio": ratio}


def _probe_tiling(a) -> dict:
    from diffusers import AutoencoderDC

    from openuni_core import vae as vae_ops
    from openuni_core.model import resolve_dtype

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
        _sync(device)
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
            args = ["tiling", "--vae", _abs(vae_dir), "--mode", mode, "--what", w, "--size", str(size),
                    "--dtype", dtype, "--device", str(device), "--out", str(f)] + (["--tile", str(tile)] if tile else [])
            if quiet_wait:
                wait_for_quiet(quiet_wait)
            try:
                res[mode] = _run_probe(args)
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
            vram = f", peak VRAM {_gb(r['vram_peak'])}" if device.type == "cuda" else ""
            report.say(f"[{name}] DC-AE {w} {size}² {dtype} {mode:7s}: {r['seconds']:.1f} s, peak RAM over baseline RSS "
                       f"{_gb(r['rss_peak_delta'])}, anonymous {_gb(r['anon_peak_delta'])}{vram}")
        if "max_abs_diff" in res:
            report.say(f"[{name}] DC-AE {w} {size}² {dtype}: max|Δ| tiled vs untiled {res['max_abs_diff']:.2e}")
        out[w] = res
    return out


# ----- driver ----------------------------------------------------------------------------------------------
SECTIONS = ("compare", "repeat", "load", "placement", "cuda", "tiling", "compile")
VARIANT_ALIASES = {"B-512": "OpenUni-B-512", "L-512": "OpenUni-L-512", "L-1024": "OpenUni-L-1024"}


def _parse(argv):
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
    from .models import DEFAULT_CACHE, ensure_internvl_hf, ensure_models, tiny_models
    from openuni_core.model import load_openuni, resolve_device, resolve_dtype

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
    for name in names:
        paths = tiny_models(cache / "tiny") if args.tiny else ensure_models(name, cache)
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


def summary_table(report: Report) -> list[str]:
    rows = ["| variant | ref s/img | ours s/img | ours/ref | max\\|Δimg\\| | repeat: LLM fwd, s | load ours / naive s | "
            "load peak RSS (anon) / weights |",
            "|---|---|---|---|---|---|---|---|"]
    for name, r in report.results.items():
        if name == "tiling":
            continue
        c, rp, ld = r.get("compare"), r.get("repeat"), r.get("load")
        rows.append("| " + " | ".join([
            name,
            f"{c['reference_s_per_image']:.2f}" if c else "–",
            f"{c['ours_s_per_image']:.2f}" if c else "–",
            f"{c['ratio']:.3f}" if c else "–",
            f"{c['max_abs_image_diff']:.1e}" if c else "–",
            f"{rp['ours_llm_forwards']}, {rp['ours_s']:.2f}" if rp else "–",
            (f"{ld['ours']['seconds']:.1f} / " + (f"{ld['naive']['seconds']:.1f}" if ld["naive"] else "not run"))
            if ld else "–",
            (f"{ld['ours']['rss_peak_delta'] / ld['ours']['weight_bytes']:.2f}× "
             f"({ld['ours']['anon_peak_delta'] / ld['ours']['weight_bytes']:.2f}×)") if ld else "–",
        ]) + " |")
    return rows


def target_lines(report: Report) -> list[str]:
    """Each issue target this run measured: the figure and whether it is met."""
    out = ["Targets measured in this run:"]
    dev = report.header["device"]
    for name, r in report.results.items():
        if name == "tiling":
            for what, t in r.items():
                u, tl = t.get("untiled", {}), t.get("tiled", {})
                if "rss_peak_delta" in tl:
                    key = "vram_peak" if dev.startswith("cuda") else "rss_peak_delta"
                    base = f"{_gb(u[key])}" if key in u else "failed (did not fit)"
                    out.append(f"- DC-AE {what} tiled: peak {_gb(tl[key])} vs untiled {base}; "
                               f"max|Δ| {t.get('max_abs_diff', float('nan')):.1e}")
            continue
        c, rp, ld = r.get("compare"), r.get("repeat"), r.get("load")
        if c:
            ok = c["ratio"] <= 0.95
            same = ("" if c.get("dtype") != "fp32" else
                    f", images {'identical' if c['max_abs_image_diff'] <= FP32_IMAGE_TOLERANCE else 'DIFFER'}")
            out.append(f"- {name} ours/reference ≤ 0.95: {c['ratio']:.3f} → {'met' if ok else 'MISSED'}{same}")
            if dev.startswith("cuda") and c.get("steps") == 20 and c.get("dtype") == "bf16":
                limit = {"OpenUni-B-512": 0.35, "OpenUni-L-1024": 1.2}.get(name)
                if limit:
                    out.append(f"- {name} end to end ≤ {limit} s: {c['ours_s_per_image']:.3f} s → "
                               f"{'met' if c['ours_s_per_image'] <= limit else 'MISSED'}")
        cu = r.get("cuda")
        if cu:
            out += _vram_target_lines(name, cu)
        if rp:
            out.append(f"- {name} repeat run does zero LLM forwards: {rp['ours_llm_forwards']} → "
                       f"{'met' if rp['ours_llm_forwards'] == 0 else 'MISSED'}")
        if ld:
            o = ld["ours"]
            if ld["ratio"] is not None:
                out.append(f"- {name} load ≤ 0.5 × naive: {ld['ratio']:.2f} → {'met' if ld['ratio'] <= 0.5 else 'MISSED'}")
            if o.get("dtype", "bf16") == "bf16":
                rss, anon = o["rss_peak_delta"] / o["weight_bytes"], o["anon_peak_delta"] / o["weight_bytes"]
                out.append(f"- {name} bf16 load peak RAM ≤ 1.3 × weights: RSS {rss:.2f}× "
                           f"({'met' if rss <= 1.3 else 'MISSED'}), anonymous {anon:.2f}× ({'met' if anon <= 1.3 else 'MISSED'})")
    return out


def _vram_target_lines(name: str, cuda: dict) -> list[str]:
    """Peak VRAM targets, at the smallest size measured (the variant's own unless --size says otherwise)."""
    size = min(int(k.split("@")[1]) for k in cuda)
    mllm, seq = cuda.get(f"mllm@{size}"), cuda.get(f"sequential@{size}")
    out = []
    limit = {"OpenUni-B-512": 4e9, "OpenUni-L-1024": 8e9}.get(name)
    if limit and mllm:
        peak = mllm["peak_vram_bytes"]
        out.append(f"- {name} {size}² peak VRAM with MLLM offload ≤ {limit / 1e9:.0f} GB ({_gb(limit)}): {_gb(peak)} → "
                   f"{'met' if peak <= limit else 'MISSED'}")
    if mllm and seq:
        lower = seq["peak_vram_bytes"] < mllm["peak_vram_bytes"]
        out.append(f"- {name} {size}² sequential offload below MLLM offload: {_gb(seq['peak_vram_bytes'])} vs "
                   f"{_gb(mllm['peak_vram_bytes'])} → {'met' if lower else 'MISSED'}")
    return out


def main(argv=None) -> int:
    args = _parse(argv)
    if args._probe:
        fn = {"load": _probe_load, "tiling": _probe_tiling}[args._probe]
        print(PROBE_TAG + json.dumps(fn(args)), flush=True)
        return 0
    run(args)
    return 0

