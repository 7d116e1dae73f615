"""The benchmark's own code path, end to end on the tiny models, so it cannot rot."""

import argparse
import math
import os
from pathlib import Path

import pytest
import torch

from benchmarks.common import FP32_IMAGE_TOLERANCE, MemorySampler, Report, Settings, ours_generate
from benchmarks.compare import reference_conditioning, reference_generate
from benchmarks.cuda_memory import bench_cuda_memory
from benchmarks.load import naive_load, probe_load
from benchmarks.models import BenchPaths, tiny_models
from benchmarks.placement import bench_placement
from benchmarks.run import parse_args
from benchmarks.run import run as run_benchmark
from benchmarks.targets import target_lines
from benchmarks.tiling import bench_tiling, probe_tiling


def test_reference_conditioning_equals_ours(model):
    """The independent upstream-style padded [prompt, CFG] batch gives the same conditioning as the core."""
    ref = reference_conditioning(model, "a red fox in the snow").float()
    ours_pos = model.encode_prompt("a red fox in the snow").embeds
    ours_neg = model.encode_negative().embeds
    assert ref.shape == (2, 256, model.transformer.config.caption_channels)
    assert torch.allclose(ref[:1], ours_pos, atol=1e-5)
    assert torch.allclose(ref[1:], ours_neg, atol=1e-5)


def test_reference_and_ours_make_the_same_image(model):
    kw = dict(steps=2, cfg=4.5, width=256, height=256, seed=5)
    ref, rw = reference_generate(model, "a cat on a table", **kw)
    ours, ow = ours_generate(model, "a cat on a table", **kw)
    assert ref.shape == ours.shape == (1, 256, 256, 3)
    assert (ref - ours).abs().max() <= FP32_IMAGE_TOLERANCE
    assert set(rw.stages) == set(ow.stages) == {"conditioning", "sampling", "decode"}


def test_benchmark_runs_end_to_end_on_tiny_models(tmp_path, capsys):
    args = parse_args(["--tiny", "--only", "compare,repeat", "--repeats", "1", "--cache", str(tmp_path),
                       "--json", str(tmp_path / "out.json")])
    report = run_benchmark(args)
    res = report.results["tiny-B"]
    c, r = res["compare"], res["repeat"]
    assert c["max_abs_image_diff"] <= FP32_IMAGE_TOLERANCE
    assert c["reference_s_per_image"] > 0 and c["ours_s_per_image"] > 0 and c["ratio"] > 0
    assert c["reference_llm_forwards_per_image"] == 1 and c["ours_llm_forwards_per_image"] == 1
    assert r["ours_llm_forwards"] == 0 and r["reference_llm_forwards"] == 1
    out = capsys.readouterr().out
    assert "# OpenUni benchmark" in out and "torch " + torch.__version__ in out
    assert "ours/reference" in out and "| tiny-B |" in out
    assert (tmp_path / "out.json").is_file()


def _probe_args(tiny, **kw):
    base = dict(variant="tiny-B", checkpoint=str(tiny.checkpoint), mllm=str(tiny.mllm_original), sana=str(tiny.sana),
                vae=str(tiny.vae), mllm_hf=str(tiny.mllm_hf), dtype="bf16", device="cpu")
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.parametrize("loader", ["ours", "naive"])
def test_load_probe_measures_time_memory_and_weights(tiny, loader):
    r = probe_load(_probe_args(tiny, loader=loader))
    assert r["loader"] == loader and r["seconds"] > 0
    assert r["weight_bytes"] > 0 and r["rss_peak_delta"] >= 0


def test_naive_baseline_loads_the_same_weights(tiny, model):
    paths = BenchPaths("tiny-B", tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, mllm_hf=tiny.mllm_hf)
    mllm, transformer, vae, connector, projector = naive_load(paths, torch.float32, torch.device("cpu"))
    for a, b in ((transformer, model.transformer), (vae, model.vae), (connector, model.bridge.connector),
                 (projector, model.bridge.projector), (mllm.model.language_model, model.mllm.model.language_model)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiling_probe(tiny):
    r = probe_tiling(argparse.Namespace(vae=str(tiny.vae), mode="tiled", what="decode", size=256, dtype="fp32",
                                        device="cpu", tile=64, out=None))
    assert r["seconds"] > 0 and r["mode"] == "tiled"


def test_tiling_section_runs_its_probes_as_fresh_processes_from_any_folder(tiny, tmp_path, monkeypatch):
    """The probes run `python -m benchmarks --_probe ...` in a fresh process; started from another working
    directory with relative paths, they still find the package and the files."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    vae = Path(os.path.relpath(tiny.vae, tmp_path))
    out = bench_tiling(vae, "DC-AE", "fp32", torch.device("cpu"), 256, Report({"device": "cpu"}), what=("decode",),
                       tile=64, workdir=Path("work"))["decode"]
    assert out["untiled"]["mode"] == "untiled" and out["tiled"]["mode"] == "tiled"
    assert out["tiled"]["seconds"] > 0 and math.isfinite(out["max_abs_diff"])
    assert not any((tmp_path / "work").iterdir())  # the outputs compared are removed


def test_memory_sampler_sees_an_allocation():
    with MemorySampler() as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MB
        x += 1
    assert mem.delta_bytes("VmRSS") >= 48 * 2**20
    del x


def test_cli_defaults():
    a = parse_args(["--quick"])
    assert a.quick and a.variants is None
    a = parse_args(["--variants", "B-512,L-1024", "--steps", "3", "--dtype", "bf16", "--device", "cpu"])
    assert a.steps == 3 and a.dtype == "bf16"


@pytest.mark.parametrize("policy", ["none", "mllm", "sequential"])
def test_placement_figures_match_what_the_core_puts_on_the_device(tiny, policy, monkeypatch):
    """The bench's computed per-policy figures against the bytes the core actually asks the host for, use by
    use (a stand-in device; nothing is moved)."""
    import contextlib

    from openuni_core import placement as placement_mod
    from openuni_core.loading import load_openuni

    m = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu",
                     offload=policy)
    p = m.placement
    fake = torch.device("cuda", 0)
    monkeypatch.setattr(p, "devices", {"mllm": fake, "sana": fake, "vae": fake})
    resident, peaks, block = {}, [], {"bytes": 0}

    def fake_move(part, dev):
        p._where[part] = dev
        resident[part] = p.part_bytes(part) if dev.type == "cuda" else 0

    @contextlib.contextmanager
    def fake_weights_on(dev, *, whole=(), per_layer=(), on_host=()):
        block["bytes"] = asked[-1]
        yield
        block["bytes"] = 0

    asked = []
    p.request_memory = lambda n, dev: asked.append(n)
    monkeypatch.setattr(p, "_move", fake_move)
    monkeypatch.setattr(placement_mod, "weights_on", fake_weights_on)
    monkeypatch.setattr(p, "_free_bytes", lambda dev: 1 << 50)  # a roomy stand-in device
    for part in p.parts:
        fake_move(part, placement_mod.CPU if p.offloaded(part) else fake)

    def run(uses):
        peak = 0
        for part, per_layer in uses:
            with p.use(part, "test", per_layer=per_layer):
                peak = max(peak, sum(resident.values()) + block["bytes"])
        return peak

    figures = bench_placement(m, "tiny-B", Report({}))[policy]
    assert run([("mllm", True), ("sana", False), ("vae", False)]) == figures["generate"]
    assert run([("mllm", False)]) == figures["caption"]


def test_cuda_section_and_its_vram_targets_run_with_a_stand_in_cuda(tmp_path, monkeypatch):
    """The CUDA section has not met a GPU here: run its code with torch.cuda's memory counters stood in,
    so the first GPU run cannot fail on a typo, and check how the VRAM targets are judged."""
    peaks = iter([5.0e9, 6.0e9, 3.9e9, 4.5e9, 2.0e9, 2.5e9])  # none, mllm, sequential × two sizes
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: next(peaks))
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 7e9)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    s = Settings(steps=1, cfg=4.5, size=64, repeats=1, dtype="fp32", device=torch.device("cpu"))
    report = Report({"device": "cuda:0"})
    out = bench_cuda_memory(tiny_models(tmp_path), "OpenUni-B-512", s, [64, 128], report)
    assert set(out) == {f"{p}@{n}" for p in ("none", "mllm", "sequential") for n in (64, 128)}
    assert out["mllm@64"]["peak_vram_bytes"] == 3.9e9 and out["sequential@128"]["s_per_image"] > 0
    report.results["OpenUni-B-512"] = {"cuda": out}
    lines = target_lines(report)
    assert any("64² peak VRAM with MLLM offload ≤ 4 GB" in line and line.endswith("met") for line in lines), lines
    assert any("sequential offload below MLLM offload" in line and line.endswith("met") for line in lines), lines
    out["mllm@64"]["peak_vram_bytes"] = 4.1e9  # over 4 GB, though under 4 GiB
    assert any("peak VRAM with MLLM offload" in line and line.endswith("MISSED") for line in target_lines(report))


def test_the_real_size_models_are_announced_before_writing_and_a_full_disk_is_refused(tmp_path, monkeypatch, capsys):
    """B-512's files are announced with their size, place and the command that frees them before anything is written
    (InternVL3-1B: its published ~0.94 B parameters in bf16 = 1.75 GiB; all four parts 4.6 GiB), and a disk with less
    room refuses the run with nothing written. Catches the announce_writes call removed from ensure_models (the
    files would be written silently), or its free-space check removed (a full disk mid-write)."""
    import shutil
    from collections import namedtuple

    from benchmarks.models import ensure_models

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(0, 0, 2 * 2**30))
    cache = tmp_path / "cache"
    with pytest.raises(SystemExit, match=r"has 2\.0 GiB free, and these files need 4\.6 GiB"):
        ensure_models("OpenUni-B-512", cache)
    out = capsys.readouterr().out
    assert f"[bench] writing 4.6 GiB of random real-size model files to {cache} (InternVL3-1B 1.75," in out
    assert f"To free the space: rm -rf {cache}" in out
    assert not cache.exists()


# ----- every target verdict, both ways --------------------------------------------------------------------------
# Each case: a variant, the report's device, the section results it reports (a figure at the target's limit, and
# one just past it), and a regular expression whose one group is the verdict printed for that target.
def _compare(**kw):
    return {"compare": {"ratio": 0.5, "max_abs_image_diff": 0.0, "dtype": "bf16", "steps": 20,
                        "ours_s_per_image": 0.1, **kw}}


def _load(ratio=0.3, rss=1.0, anon=1.0):
    w = 1_000_000_000
    return {"load": {"ratio": ratio, "ours": {"dtype": "bf16", "weight_bytes": w, "seconds": 1.0,
                                              "rss_peak_delta": rss * w, "anon_peak_delta": anon * w}}}


def _cuda(mllm=3.9e9, sequential=2.0e9):
    return {"cuda": {"mllm@512": {"peak_vram_bytes": mllm}, "sequential@512": {"peak_vram_bytes": sequential},
                     "none@512": {"peak_vram_bytes": 9e9}}}


B, L = "OpenUni-B-512", "OpenUni-L-1024"


VERDICTS = {
    "speed ratio": (B, "cpu", _compare(ratio=0.95), _compare(ratio=0.951), r"ours/reference ≤ 0\.95: [\d.]+ → (\w+)"),
    "fp32 images": (B, "cpu", _compare(dtype="fp32", max_abs_image_diff=1e-3),
                    _compare(dtype="fp32", max_abs_image_diff=2e-3), r"images (identical|DIFFER)"),
    "end to end B": (B, "cuda:0", _compare(ours_s_per_image=0.35), _compare(ours_s_per_image=0.36),
                     r"end to end ≤ 0\.35 s: [\d.]+ s → (\w+)"),
    "end to end L": (L, "cuda:0", _compare(ours_s_per_image=1.2), _compare(ours_s_per_image=1.21),
                     r"end to end ≤ 1\.2 s: [\d.]+ s → (\w+)"),
    "repeat run": (B, "cpu", {"repeat": {"ours_llm_forwards": 0}}, {"repeat": {"ours_llm_forwards": 1}},
                   r"repeat run does zero LLM forwards: \d+ → (\w+)"),
    "load time": (B, "cpu", _load(ratio=0.5), _load(ratio=0.51), r"load ≤ 0\.5 × naive: [\d.]+ → (\w+)"),
    "load RSS": (B, "cpu", _load(rss=1.3), _load(rss=1.31), r"RSS [\d.]+× \((\w+)\)"),
    "load anonymous": (B, "cpu", _load(anon=1.3), _load(anon=1.31), r"anonymous [\d.]+× \((\w+)\)"),
    "VRAM B with MLLM offload": (B, "cuda:0", _cuda(mllm=4.0e9), _cuda(mllm=4.01e9),
                                 r"peak VRAM with MLLM offload ≤ 4 GB .*→ (\w+)"),
    "VRAM L with MLLM offload": (L, "cuda:0", _cuda(mllm=8.0e9), _cuda(mllm=8.01e9),
                                 r"peak VRAM with MLLM offload ≤ 8 GB .*→ (\w+)"),
    "sequential below MLLM offload": (B, "cuda:0", _cuda(sequential=2.0e9), _cuda(sequential=3.9e9),
                                      r"sequential offload below MLLM offload: .* → (\w+)"),
}
MET = {"identical": "met", "DIFFER": "MISSED"}


@pytest.mark.parametrize("target", sorted(VERDICTS))
def test_every_target_verdict_follows_its_figure(target):
    """Every target line says "met" for a figure at its limit and "MISSED" just past it. Guards against hard-wiring
    any verdict in benchmarks/targets.py (e.g. `'met' if ld['ratio'] <= 0.5 else 'MISSED'` → `'met'`) or comparing
    against the wrong limit (e.g. `c["ratio"] <= 0.95` → `<= 1.0`)."""
    import re

    variant, device, meets, misses, pattern = VERDICTS[target]
    seen = []
    for results in (meets, misses):
        report = Report({"device": device})
        report.results[variant] = results
        found = [m.group(1) for line in target_lines(report) if (m := re.search(pattern, line))]
        assert len(found) == 1, (target, target_lines(report))
        seen.append(MET.get(found[0], found[0]))
    assert seen == ["met", "MISSED"], (target, seen)


def test_captioning_section_on_tiny_models(tmp_path):
    """Sequential vs batched captions per second runs end to end: the batched call makes fewer LLM forwards, gives
    the same answers, and the cached repeat none. Catches: the two paths asking different things, a cache bypassed."""
    args = parse_args(["--tiny", "--only", "captioning", "--repeats", "1", "--cache", str(tmp_path)])
    c = run_benchmark(args).results["tiny-B"]["captioning"]
    assert c["images"] == 8 and c["identical"] and c["cached_identical"]
    assert c["sequential_captions_per_s"] > 0 and c["batched_captions_per_s"] > 0
    assert c["batched_llm_forwards"] <= c["new_tokens"] < c["sequential_llm_forwards"]
    assert c["cached_repeat_llm_forwards"] == 0
