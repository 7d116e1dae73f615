"""The end of a report: the summary table (one row per variant) and each target of the issue with the figure
this run measured and "met" or "MISSED". Reads only `Report.header` and `Report.results`.
"""

from __future__ import annotations

from .captioning import captioning_target_lines
from .common import FP32_IMAGE_TOLERANCE, Report, gb


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
                    base = f"{gb(u[key])}" if key in u else "failed (did not fit)"
                    out.append(f"- DC-AE {what} tiled: peak {gb(tl[key])} vs untiled {base}; "
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
        if r.get("captioning"):
            out += captioning_target_lines(name, r["captioning"])
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
        out.append(f"- {name} {size}² peak VRAM with MLLM offload ≤ {limit / 1e9:.0f} GB ({gb(limit)}): {gb(peak)} → "
                   f"{'met' if peak <= limit else 'MISSED'}")
    if mllm and seq:
        lower = seq["peak_vram_bytes"] < mllm["peak_vram_bytes"]
        out.append(f"- {name} {size}² sequential offload below MLLM offload: {gb(seq['peak_vram_bytes'])} vs "
                   f"{gb(mllm['peak_vram_bytes'])} → {'met' if lower else 'MISSED'}")
    return out
