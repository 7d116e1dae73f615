"""Reference vs ours, image by image (sections `compare`, `repeat` and, with --compile, `compile`).

The reference is what upstream OpenUni's inference does, written here independently of the core: one padded
[prompt, CFG prompt] LLM batch with the meta queries appended, connector + projector, then diffusers'
`SanaPipeline` with the DPM-Solver++ scheduler, and the DC-AE decode. Ours is the core exactly as the nodes call
it (`common.ours_generate`). Both share the loaded modules (no second copy), dtype, steps, cfg, size and CPU noise.

- compare: a warm-up pair, then `repeats` pairs, each with a new prompt (so ours must run its LLM), in
  alternating order (ref→ours, ours→ref) so drifting machine load hits both alike. Seconds per image (median),
  ours/reference (median of the per-pair ratios), stages, LLM forwards per image, max |Δ| between the images.
- repeat: the same prompt again with a new seed (ComfyUI re-running with a new seed): LLM forwards and time.
- compile: ours with the core's torch.compile switch against eager ours, alternating; first-run compile time.
"""

from __future__ import annotations

import statistics
import time

import torch

from .common import (FP32_IMAGE_TOLERANCE, PROMPTS, ForwardCounter, Report, Settings, Stopwatch, fmt_stages,
                     ours_generate, timed_run, wait_for_quiet)


# ----- the reference path: upstream OpenUni's inference, written independently ------------------------------
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


# ----- the sections: compare, repeat, compile ----------------------------------------------------------------
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
    report.say(f"{tag} reference {ref_t:.3f} s/image ({fmt_stages(res['reference_stages'])}; "
               f"{res['reference_llm_forwards_per_image']:g} LLM forward)")
    report.say(f"{tag} ours      {our_t:.3f} s/image ({fmt_stages(res['ours_stages'])}; "
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


def bench_compile(model, name: str, s: Settings, report: Report) -> dict:
    """Ours with the SANA transformer under torch.compile (as the CLI's --compile sets it), against eager ours."""
    kw = s.image_kwargs
    eager, compiled = [], []
    variants = {True: torch.compile(model.transformer), False: model.transformer}
    try:
        model.denoiser = variants[True]
        t0 = time.perf_counter()
        ours_generate(model, PROMPTS[0], seed=1, **kw)  # the first call compiles
        warm = time.perf_counter() - t0
        diffs = []
        for k in range(s.repeats):
            prompt = PROMPTS[1 + k % (len(PROMPTS) - 1)] + f" #{k}"
            imgs = {}
            for on in ((True, False) if k % 2 == 0 else (False, True)):
                model.denoiser = variants[on]
                if s.quiet_wait:
                    wait_for_quiet(s.quiet_wait)
                imgs[on], w = ours_generate(model, prompt, seed=100 + k, **kw)
                (compiled if on else eager).append(w.wall)
            diffs.append(float((imgs[True] - imgs[False]).abs().max()))
    finally:
        model.denoiser = model.transformer
    res = {"ours_compiled_s_per_image": statistics.median(compiled), "ours_eager_s_per_image": statistics.median(eager),
           "compile_first_run_s": warm, "max_abs_image_diff_vs_eager": max(diffs)}
    report.say(f"[{name}] compile=True: {res['ours_compiled_s_per_image']:.3f} s/image vs eager "
               f"{res['ours_eager_s_per_image']:.3f} (first run, compiling: {warm:.1f} s); max|Δimage| vs eager "
               f"{res['max_abs_image_diff_vs_eager']:.2e}")
    return res
