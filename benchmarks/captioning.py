"""Captions per second: N images answered one call at a time (sequential) vs in one batched call (section
`captioning`).

On real-size InternVL3 with random weights (models.py), through the engine's captioning functions (what OpenUni
Caption calls): sequential = one `captioning.caption` call per image, as the node ran before batching; batched =
one `captioning.captions` call for all images (their tiles through the vision tower together, all rows in one
left-padded generate). Both greedy, same question, tiles and new tokens, in alternating order per round so
drifting machine load hits both alike. Also: whether the answers are identical, LLM forwards per path, and the
batched call repeated through the answer cache (no forward at all).
"""

from __future__ import annotations

import statistics

import torch

from .common import ForwardCounter, Report, Settings, Stopwatch, timed_run

QUESTION = "Describe the image in one short sentence."


def bench_captioning(mllm_dir, name: str, s: Settings, report: Report, *, images: int = 8, new_tokens: int = 32,
                     max_tiles: int = 1) -> dict:
    from openuni_core import captioning
    from openuni_core.chat import AnswerCache
    from openuni_core.devices import resolve_dtype
    from openuni_core.internvl import load_internvl

    mllm, tok, info = load_internvl(mllm_dir, dtype=resolve_dtype(s.dtype, s.device))
    mllm.to(s.device)
    gen = torch.Generator().manual_seed(0)
    pictures = [torch.rand(448, 448, 3, generator=gen) for _ in range(images)]  # 448² = one tile each
    kw = dict(max_tiles=max_tiles, max_new_tokens=new_tokens, use_thumbnail=info.use_thumbnail)
    counter = ForwardCounter(mllm.model.language_model)

    def timed(call):
        def run():
            counter.count = 0
            watch = Stopwatch(s.device)
            out = call()
            watch.lap("captions")
            watch.forwards = counter.count
            return out, watch
        return run

    sequential = timed(lambda: [captioning.caption(mllm, tok, p, question=QUESTION, **kw) for p in pictures])
    batched = timed(lambda: captioning.captions(mllm, tok, [QUESTION], pictures, **kw))
    captioning.captions(mllm, tok, [QUESTION], pictures[:2], **dict(kw, max_new_tokens=2))  # warm-up
    rounds = []
    for r in range(s.repeats):
        order = (("sequential", sequential), ("batched", batched))
        got = {}
        for label, fn in (order if r % 2 == 0 else order[::-1]):
            got[label] = timed_run(fn, s)
        rounds.append(got)
    cache = AnswerCache()
    captioning.captions(mllm, tok, [QUESTION], pictures, cache=cache, **kw)
    cached, cwatch = timed(lambda: captioning.captions(mllm, tok, [QUESTION], pictures, cache=cache, **kw))()
    counter.close()

    seq_s = statistics.median(g["sequential"][1].wall for g in rounds)
    bat_s = statistics.median(g["batched"][1].wall for g in rounds)
    last = rounds[-1]
    res = {
        "images": images, "tiles_per_image": max_tiles, "new_tokens": new_tokens, "dtype": s.dtype,
        "device": str(s.device), "rounds": len(rounds),
        "sequential_captions_per_s": images / seq_s, "batched_captions_per_s": images / bat_s,
        "speedup": statistics.median(g["sequential"][1].wall / g["batched"][1].wall for g in rounds),
        "round_seconds": [{k: round(w.wall, 2) for k, (_, w) in g.items()} for g in rounds],
        "identical": last["sequential"][0] == last["batched"][0],
        "sequential_llm_forwards": last["sequential"][1].forwards, "batched_llm_forwards": last["batched"][1].forwards,
        "cached_repeat_s": cwatch.wall, "cached_repeat_llm_forwards": cwatch.forwards,
        "cached_identical": cached == last["batched"][0],
        "others_cpu_share": max((w.others or 0.0) for g in rounds for _, w in g.values()),
    }
    report.say(f"[{name}] captioning {images} images × {max_tiles} tile, {new_tokens} new tokens, {s.dtype} on "
               f"{s.device}: sequential {res['sequential_captions_per_s']:.3f} captions/s "
               f"({res['sequential_llm_forwards']} LLM forwards), batched {res['batched_captions_per_s']:.3f} "
               f"captions/s ({res['batched_llm_forwards']}); batched/sequential {res['speedup']:.2f}× (median of "
               f"{len(rounds)} alternating rounds, seconds per round {res['round_seconds']}); answers {'identical' if res['identical'] else 'DIFFER'}; "
               f"cached repeat {cwatch.wall:.3f} s, {cwatch.forwards} LLM forwards; other processes used up to "
               f"{res['others_cpu_share']:.0%} of the CPUs")
    del mllm
    return res


def captioning_target_lines(name: str, c: dict) -> list[str]:
    return [f"- {name} batched captioning faster than sequential ({c['images']} images): {c['speedup']:.2f}× → "
            f"{'met' if c['speedup'] > 1 else 'MISSED'}, answers {'identical' if c['identical'] else 'DIFFER'}",
            f"- {name} repeated captions from the cache with zero LLM forwards: {c['cached_repeat_llm_forwards']} → "
            f"{'met' if c['cached_repeat_llm_forwards'] == 0 and c['cached_identical'] else 'MISSED'}"]
