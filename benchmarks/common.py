"""What every benchmark section shares: the machine, the clock, memory, the prompts and fresh-process probes.

- `machine_info`: the report's header (CPU, RAM, library versions, device, whether flash-attn imports).
- Timing on a shared machine: `Stopwatch` times named stages (CUDA-synchronised at each boundary) and records
  how much of the CPUs *other* processes used meanwhile (from /proc/stat); `wait_for_quiet` waits for them to
  go quiet first; `timed_run` runs again what they disturbed, keeping the least disturbed attempt.
- Memory: `MemorySampler` samples this process's peak RSS and anonymous memory (/proc/self/status).
- `ForwardCounter` counts forward calls of a module (the LLM).
- `ours_generate`: one image made exactly the way the nodes make it, stage by stage on a Stopwatch.
- `Settings` (what one variant is run with) and `Report` (the printed lines and the JSON results).
- `run_probe`: a measurement in a fresh process (`python -m benchmarks --_probe ...`, run from the repository
  root), whose result comes back as one tagged JSON line.
"""

from __future__ import annotations

import json
import os
import platform
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


# ----- machine and measurement helpers ----------------------------------------------------------------------
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


def sync(device: torch.device) -> None:
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
        sync(device)
        self.j0 = _cpu_jiffies()
        self.t0 = self.last = time.perf_counter()
        self.c0 = time.process_time()

    def lap(self, name: str) -> None:
        sync(self.device)
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


def gb(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def fmt_stages(st: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in st.items())


# ----- one image, the way the nodes make it; one run's settings and the report ------------------------------
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
    cache = model.prompts.cache if model is not None else None
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


# ----- fresh-process probes (load, tiling) ------------------------------------------------------------------
def run_probe(args: list[str], *, timeout: float = 3600) -> dict:
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


def probe_path(path) -> str:
    """A path argument for a probe (which runs in the repository root): absolute; "" for None."""
    return str(Path(path).absolute()) if path else ""
