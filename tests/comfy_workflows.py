"""The example workflows, defined once and written in both of ComfyUI's formats.

    python tests/comfy_workflows.py          # rewrite example_workflows/*.json and example_workflows/api/*.json

- example_workflows/<name>.json: the UI ("workflow") format that drag-and-drop and ComfyUI's template
  browser load. It names the real released model files and uses 'auto' for the folders, so it runs
  once the files are in models/openuni/.
- example_workflows/api/<name>.json: the API ("prompt") format of the same graph, with the tiny test
  models and small sizes that tests/test_comfy_e2e.py places in a temporary ComfyUI models folder.

tests/test_nodes_workflows.py checks the committed files equal what this module writes, so edit the
graphs here, not the JSON.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "example_workflows"

REAL_MODELS = {"checkpoint": "openuni_b_internvl3_1b_sana_0_6b_512_hf_blip3o60k.pth",
               "mllm": "auto", "sana": "auto", "vae": "auto"}
TINY_MODELS = {"checkpoint": "openuni_tiny_b.safetensors", "mllm": "InternVL3-tiny",
               "sana": "Sana-tiny_diffusers", "vae": "dc-ae-tiny-diffusers"}
EXAMPLE_IMAGE = "example.png"  # ships in ComfyUI's input/ folder; the e2e test writes one too
INPAINT_IMAGE = "example_inpaint.png"  # the e2e test writes it, with a transparent hole = the mask to repaint
EXAMPLE_LORA = "sana_lora.safetensors"  # put a SANA LoRA under this name in models/loras/; the e2e writes a tiny one

# Core ComfyUI nodes used by the examples: (link inputs, widget names, outputs).
CORE_NODES = {
    "LoadImage": ([], ["image", "upload"], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "SaveImage": ([("images", "IMAGE")], ["filename_prefix"], []),
    "ImageScaleBy": ([("image", "IMAGE")], ["upscale_method", "scale_by"], [("IMAGE", "IMAGE")]),
    "Note": ([], ["text"], []),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                  ("latent_image", "LATENT")],
                 ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
                 [("LATENT", "LATENT")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [], [("IMAGE", "IMAGE")]),
    "VAEEncodeForInpaint": ([("pixels", "IMAGE"), ("vae", "VAE"), ("mask", "MASK")], ["grow_mask_by"],
                            [("LATENT", "LATENT")]),
    "LatentUpscaleBy": ([("samples", "LATENT")], ["upscale_method", "scale_by"], [("LATENT", "LATENT")]),
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@dataclass
class N:
    id: int
    type: str
    pos: tuple[int, int]
    widgets: dict = field(default_factory=dict)  # name → value (UI values; tiny overrides below)
    links: dict = field(default_factory=dict)  # input name → (source id, output slot)
    size: tuple[int, int] = (340, 200)
    tiny: dict = field(default_factory=dict)  # widget values for the API/tiny copy
    title: str | None = None


def _loader(nid=1, pos=(20, 120)):
    widgets = {**REAL_MODELS, "precision": "auto", "memory": "keep parts loaded", "attention": "auto",
               "download_missing": False, "mllm_device": "same as the model"}
    return N(nid, "OpenUniModelLoader", pos, widgets, size=(400, 270),
             tiny={**TINY_MODELS, "precision": "fp32"})


def _sampler(nid, pos, pos_src, neg_src, model=1, **kw):
    widgets = {"seed": 42, "steps": 20, "cfg": 4.5, "sampler": "dpmpp", "width": 512, "height": 512,
               "batch_size": 1, "denoise": 1.0}
    widgets.update(kw.pop("widgets", {}))
    links = {"model": (model, 0), "positive": pos_src, "negative": neg_src, **kw.pop("links", {})}
    tiny = {"steps": 3, "width": 64, "height": 64, **kw.pop("tiny", {})}
    return N(nid, "OpenUniSampler", pos, widgets, links, size=(340, 400), tiny=tiny, **kw)


def _ksampler(nid, pos, positive, negative, latent, model=(1, 1), **kw):
    """Core KSampler on the loader's MODEL with the recommended pair for OpenUni: euler + normal (= OpenUni Sampler's
    euler), 20 steps, cfg 4.5."""
    widgets = {"seed": 42, "control_after_generate": "fixed", "steps": 20, "cfg": 4.5, "sampler_name": "euler",
               "scheduler": "normal", "denoise": 1.0, **kw.pop("widgets", {})}
    links = {"model": model, "positive": positive, "negative": negative, "latent_image": latent}
    return N(nid, "KSampler", pos, widgets, links, size=(320, 300), tiny={"steps": 3, **kw.pop("tiny", {})}, **kw)


def _empty_latent(nid, pos, side=512):
    return N(nid, "OpenUniEmptyLatent", pos, {"width": side, "height": side, "batch_size": 1}, size=(300, 130),
             tiny={"width": 64, "height": 64})


def _decode_and_save(nid, pos, latent, prefix):
    return [N(nid, "VAEDecode", pos, {}, {"samples": latent, "vae": (1, 2)}, size=(220, 60)),
            N(nid + 1, "SaveImage", (pos[0] + 260, pos[1]), {"filename_prefix": prefix}, {"images": (nid, 0)},
              size=(420, 460))]


NATIVE_NOTE = ("The loader's MODEL output is SANA as a ComfyUI model and its VAE output DC-AE, so the core KSampler "
               "and VAE Decode work on OpenUni: euler + normal reproduces OpenUni Sampler's euler; LoRA, EasyCache "
               "and ModelSamplingSD3 apply; live previews need ComfyUI's --preview-method auto.")

FOX = "A red fox sitting in fresh snow at sunrise, soft golden light, detailed photograph"


def _note(nid, pos, text, size=(400, 220)):
    return N(nid, "Note", pos, {"text": text}, size=size)


LOADER_NOTE = ("Model files go in ComfyUI/models/openuni/ (checkpoints), models/openuni/mllm/ (InternVL3), "
               "models/openuni/sana/ (SANA) and models/openuni/vae/ (DC-AE). 'auto' picks the folders that belong "
               "to the checkpoint. Missing files? Turn on download_missing once to fetch them from Hugging Face.\n\n"
               "License: OpenUni weights are NTU S-Lab License 1.0 (non-commercial); InternVL3 and SANA have their own.")

WORKFLOWS: dict[str, list[N]] = {
    "openuni_text_to_image": [
        _loader(),
        N(2, "OpenUniTextEncode", (460, 120), {"prompt": FOX, "negative_prompt": ""}, {"model": (1, 0)},
          size=(400, 270)),
        _sampler(3, (900, 120), (2, 0), (2, 1)),
        N(4, "OpenUniVAEDecode", (1280, 120), {"tiling": "auto"}, {"model": (1, 0), "latent": (3, 0)},
          size=(270, 100)),
        N(5, "SaveImage", (1590, 120), {"filename_prefix": "OpenUni/text_to_image"}, {"images": (4, 0)},
          size=(420, 460)),
        _note(6, (20, 440), "Text to image with OpenUni.\n\nOpenUni Text Encode feeds the prompt to InternVL3; "
              "the sampler runs SANA with the reference settings (20 steps, cfg 4.5, DPM-Solver++). Keep width and "
              "height on multiples of 32 (the sampler's aspect_preset lists good sizes per variant: 512 px for "
              "OpenUni-B/L-512, 1024 px for OpenUni-L-1024).\n\n" + LOADER_NOTE, size=(400, 330)),
    ],
    "openuni_image_edit": [
        _loader(),
        N(2, "LoadImage", (20, 440), {"image": EXAMPLE_IMAGE, "upload": "image"}, size=(400, 340)),
        N(3, "OpenUniImageEditEncode", (460, 120),
          {"instruction": "Make it look like a watercolor painting.", "negative_instruction": "Keep the image as it is."},
          {"model": (1, 0), "image": (2, 0)}, size=(400, 300)),
        _sampler(4, (900, 120), (3, 0), (3, 1)),
        N(5, "OpenUniVAEDecode", (1280, 120), {"tiling": "auto"}, {"model": (1, 0), "latent": (4, 0)},
          size=(270, 100)),
        N(6, "SaveImage", (1590, 120), {"filename_prefix": "OpenUni/image_edit"}, {"images": (5, 0)},
          size=(420, 460)),
        _note(7, (460, 470), "EXPERIMENTAL image editing.\n\nOpenUni Image Edit Encode shows InternVL3 the image "
              "(as 256 tokens) followed by your instruction; the guidance branch sees the same image with "
              "'Keep the image as it is.'. The math follows the reference code exactly, but upstream has not "
              "released an image-to-image checkpoint, so expect loose edits.\n\n" + LOADER_NOTE, size=(400, 330)),
    ],
    "openuni_caption_to_generate": [
        _loader(),
        N(2, "LoadImage", (20, 440), {"image": EXAMPLE_IMAGE, "upload": "image"}, size=(400, 340)),
        N(3, "OpenUniCaption", (460, 120),
          {"question": "Describe this image in one detailed sentence.", "max_tiles": 12, "max_new_tokens": 128,
           "temperature": 0.0, "seed": 0},
          {"model": (1, 0), "image": (2, 0)}, size=(400, 420),
          tiny={"max_tiles": 1, "max_new_tokens": 12, "temperature": 1.0, "seed": 7}),
        N(4, "OpenUniTextEncode", (900, 120), {"prompt": "", "negative_prompt": ""},
          {"model": (1, 0), "prompt": (3, 0)}, size=(400, 200)),
        _sampler(5, (1340, 120), (4, 0), (4, 1)),
        N(6, "OpenUniVAEDecode", (1720, 120), {"tiling": "auto"}, {"model": (1, 0), "latent": (5, 0)},
          size=(270, 100)),
        N(7, "SaveImage", (2030, 120), {"filename_prefix": "OpenUni/caption_to_generate"}, {"images": (6, 0)},
          size=(420, 460)),
        _note(8, (900, 380), "Caption → generate.\n\nOpenUni Caption asks InternVL3 about the image (the answer is "
              "shown on the node) and its text output is wired into the prompt of OpenUni Text Encode, so OpenUni "
              "redraws what it understood. Change the question to steer the description.\n\n" + LOADER_NOTE,
              size=(400, 330)),
    ],
    "openuni_generate_upscale": [
        _loader(),
        N(2, "OpenUniTextEncode", (460, 120), {"prompt": FOX, "negative_prompt": ""}, {"model": (1, 0)},
          size=(400, 270)),
        _sampler(3, (900, 120), (2, 0), (2, 1)),
        N(4, "OpenUniVAEDecode", (1280, 120), {"tiling": "auto"}, {"model": (1, 0), "latent": (3, 0)},
          size=(270, 100)),
        N(5, "SaveImage", (1280, 280), {"filename_prefix": "OpenUni/upscale_base"}, {"images": (4, 0)},
          size=(320, 360)),
        N(6, "ImageScaleBy", (1640, 120), {"upscale_method": "lanczos", "scale_by": 1.5}, {"image": (4, 0)},
          size=(300, 100)),
        N(7, "OpenUniVAEEncode", (1640, 280), {"tiling": "auto"}, {"model": (1, 0), "image": (6, 0)},
          size=(300, 100)),
        _sampler(8, (1980, 120), (2, 0), (2, 1), widgets={"denoise": 0.45}, links={"latent": (7, 0)},
                 tiny={}, title="OpenUni Sampler (refine)"),
        N(9, "OpenUniVAEDecode", (2360, 120), {"tiling": "auto"}, {"model": (1, 0), "latent": (8, 0)},
          size=(270, 100)),
        N(10, "SaveImage", (2670, 120), {"filename_prefix": "OpenUni/upscale_refined"}, {"images": (9, 0)},
          size=(460, 500)),
        _note(11, (20, 440), "Generate → upscale.\n\nThe first pass renders at the model's native size. ComfyUI's "
              "core Upscale Image By (lanczos ×1.5; swap in Upscale Image (using Model) for an ESRGAN-style model) "
              "enlarges it, OpenUni VAE Encode turns it back into latents, and a second OpenUni Sampler with "
              "denoise 0.45 redraws the detail at the larger size (width/height come from the latent).\n\n"
              + LOADER_NOTE, size=(400, 360)),
    ],
    "openuni_native_text_to_image": [
        _loader(),
        N(2, "OpenUniTextEncode", (460, 120), {"prompt": FOX, "negative_prompt": ""}, {"model": (1, 0)},
          size=(400, 270)),
        _empty_latent(3, (460, 430)),
        _ksampler(4, (900, 120), (2, 0), (2, 1), (3, 0)),
        *_decode_and_save(5, (1260, 120), (4, 0), "OpenUni/native_text_to_image"),
        _note(7, (20, 440), "Text to image with ComfyUI's own KSampler.\n\n" + NATIVE_NOTE + " OpenUni Empty Latent "
              "makes DC-AE's 32-channel latents (Empty Latent Image makes 4-channel ones). For the reference "
              "DPM-Solver++, use SamplerCustomAdvanced with OpenUni Scheduler (dpmpp) and OpenUni DPM-Solver++, or "
              "OpenUni Sampler.\n\n" + LOADER_NOTE, size=(400, 400)),
    ],
    "openuni_inpainting": [
        _loader(),
        N(2, "LoadImage", (20, 440), {"image": EXAMPLE_IMAGE, "upload": "image"}, size=(400, 340),
          tiny={"image": INPAINT_IMAGE}),
        N(3, "OpenUniTextEncode", (460, 120), {"prompt": "a small wooden cabin", "negative_prompt": ""},
          {"model": (1, 0)}, size=(400, 220)),
        N(4, "VAEEncodeForInpaint", (460, 380), {"grow_mask_by": 6}, {"pixels": (2, 0), "vae": (1, 2), "mask": (2, 1)},
          size=(300, 100), tiny={"grow_mask_by": 0}),  # the e2e test's mask covers whole latent cells
        _ksampler(5, (900, 120), (3, 0), (3, 1), (4, 0)),
        *_decode_and_save(6, (1260, 120), (5, 0), "OpenUni/inpainting"),
        _note(8, (460, 530), "Inpainting.\n\nRight-click the Load Image node → Open in MaskEditor and paint where the "
              "image should change. VAE Encode (for Inpainting) greys that area and attaches the mask as the latent's "
              "noise mask; KSampler repaints only inside it and keeps the rest (up to the DC-AE round trip). To keep "
              "more of the original inside the mask, use VAE Encode + Set Latent Noise Mask and a denoise below 1. "
              "OpenUni Sampler honours the same mask.\n\n" + LOADER_NOTE, size=(400, 400)),
    ],
    "openuni_hires_fix": [
        _loader(),
        N(2, "OpenUniTextEncode", (460, 120), {"prompt": FOX, "negative_prompt": ""}, {"model": (1, 0)},
          size=(400, 270)),
        _empty_latent(3, (460, 430)),
        _ksampler(4, (900, 120), (2, 0), (2, 1), (3, 0)),
        N(5, "LatentUpscaleBy", (1260, 120), {"upscale_method": "bislerp", "scale_by": 1.5}, {"samples": (4, 0)},
          size=(300, 100)),
        _ksampler(6, (1600, 120), (2, 0), (2, 1), (5, 0), widgets={"denoise": 0.5}, title="KSampler (hires)"),
        *_decode_and_save(7, (1960, 120), (6, 0), "OpenUni/hires_fix"),
        _note(9, (20, 440), "Hires fix.\n\nThe first KSampler renders at the model's native size; Upscale Latent By "
              "enlarges the latent ×1.5 (one DC-AE latent cell is 32×32 pixels, so this is coarse) and a second "
              "KSampler at denoise 0.5 redraws the detail at the larger size. OpenUni-B/L-512 are trained at 512 px: "
              "much larger first passes repeat objects.\n\n" + LOADER_NOTE, size=(400, 380)),
    ],
    "openuni_lora": [
        _loader(),
        N(2, "OpenUniLoraLoader", (460, 120), {"lora_name": EXAMPLE_LORA, "strength_model": 1.0}, {"model": (1, 1)},
          size=(360, 130)),
        N(3, "OpenUniTextEncode", (460, 300), {"prompt": FOX, "negative_prompt": ""}, {"model": (1, 0)},
          size=(400, 270)),
        _empty_latent(4, (460, 610)),
        _ksampler(5, (900, 120), (3, 0), (3, 1), (4, 0), model=(2, 0)),
        *_decode_and_save(6, (1260, 120), (5, 0), "OpenUni/lora"),
        _note(8, (20, 440), "A SANA LoRA on OpenUni.\n\nPut the LoRA in models/loras/ and pick it in OpenUni LoRA "
              "Loader (model only): diffusers/PEFT files (transformer.…lora_A/lora_B, as diffusers' SANA LoRA "
              "training writes them) and kohya/OneTrainer names load; a LoRA for another model is refused with its "
              "keys. Kohya files also load in the core LoraLoaderModelOnly. The LoRA must be trained for the SANA "
              "inside the checkpoint (SANA 0.6B for OpenUni-B, 1.6B for OpenUni-L).\n\n" + LOADER_NOTE,
              size=(400, 420)),
    ],
}


def prompt_enhance_to_generate() -> list[N]:
    """Short idea → OpenUni Prompt Enhance → OpenUni Text Encode → sampler → decode → save."""
    return [
        _loader(),
        N(2, "OpenUniPromptEnhance", (460, 120),
          {"prompt": "a fox in the snow at dawn", "max_tiles": 12, "max_new_tokens": 160, "temperature": 0.0,
           "seed": 0},
          {"model": (1, 0)}, size=(400, 420), tiny={"max_new_tokens": 12, "temperature": 1.0, "seed": 7}),
        N(3, "OpenUniTextEncode", (900, 120), {"prompt": "", "negative_prompt": ""},
          {"model": (1, 0), "prompt": (2, 0)}, size=(400, 200)),
        _sampler(4, (1340, 120), (3, 0), (3, 1)),
        N(5, "OpenUniVAEDecode", (1720, 120), {"tiling": "auto"}, {"model": (1, 0), "latent": (4, 0)},
          size=(270, 100)),
        N(6, "SaveImage", (2030, 120), {"filename_prefix": "OpenUni/prompt_enhance"}, {"images": (5, 0)},
          size=(420, 460)),
        _note(7, (900, 380), "Prompt enhance → generate.\n\nOpenUni Prompt Enhance asks OpenUni's own InternVL3 (no "
              "second model in memory) to turn the short idea into a detailed prompt; the prompt it wrote is shown "
              "on the node and feeds OpenUni Text Encode. Connect an image to its optional input to take subject "
              "and style from a reference. temperature 0 writes the same prompt every time; raise it (and change the "
              "seed) for variations.\n\n" + LOADER_NOTE, size=(400, 360)),
    ]


WORKFLOWS["openuni_prompt_enhance_to_generate"] = prompt_enhance_to_generate()


# ----- node shapes --------------------------------------------------------------------------------------------

def node_shape(type_: str, node_classes: dict):
    """(link inputs [(name, type)], widget names (with the frontend's control_after_generate), outputs)."""
    if type_ in CORE_NODES:
        return CORE_NODES[type_]
    cls = node_classes[type_]
    spec = cls.INPUT_TYPES()
    links, widgets = [], []
    for section in ("required", "optional"):
        for name, (kind, *opts) in spec.get(section, {}).items():
            opts = opts[0] if opts else {}
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                widgets.append(name)
                if kind == "INT" and opts.get("control_after_generate",
                                              name in ("seed", "noise_seed")):
                    widgets.append("control_after_generate")
            else:
                links.append((name, kind))
    outputs = list(zip(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), cls.RETURN_TYPES))
    return links, widgets, outputs


def _widget_value(node: N, name: str, defaults: dict):
    if name == "control_after_generate":
        return "fixed"
    return node.widgets.get(name, defaults.get(name))


def _defaults(type_: str, node_classes: dict) -> dict:
    if type_ in CORE_NODES:
        return {}
    out = {}
    for section in node_classes[type_].INPUT_TYPES().values():
        for name, (kind, *opts) in section.items():
            if opts and "default" in opts[0]:
                out[name] = opts[0]["default"]
    return out


def ui_workflow(name: str, node_classes: dict) -> dict:
    nodes = WORKFLOWS[name]
    by_id = {n.id: n for n in nodes}
    links, ui_nodes = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    in_link: dict[tuple[int, str], int] = {}
    for n in nodes:
        link_inputs, widget_names, _ = node_shape(n.type, node_classes)
        for inp, (src, slot) in n.links.items():
            link_id = len(links) + 1
            src_outputs = node_shape(by_id[src].type, node_classes)[2]
            names = [i for i, _ in link_inputs] + [w for w in widget_names if w in n.links]
            links.append([link_id, src, slot, n.id, names.index(inp), src_outputs[slot][1]])
            out_links.setdefault((src, slot), []).append(link_id)
            in_link[(n.id, inp)] = link_id
    order = _execution_order(nodes)
    for n in nodes:
        link_inputs, widget_names, outputs = node_shape(n.type, node_classes)
        defaults = _defaults(n.type, node_classes)
        inputs = [{"name": i, "type": t, "link": in_link.get((n.id, i))} for i, t in link_inputs]
        widget_types = _widget_types(n.type, node_classes)
        inputs += [{"name": w, "type": widget_types[w], "widget": {"name": w}, "link": in_link[(n.id, w)]}
                   for w in widget_names if (n.id, w) in in_link]
        node = {"id": n.id, "type": n.type, "pos": list(n.pos), "size": list(n.size), "flags": {},
                "order": order[n.id], "mode": 0, "inputs": inputs,
                "outputs": [{"name": oname, "type": otype, "links": out_links.get((n.id, slot), []),
                             "slot_index": slot} for slot, (oname, otype) in enumerate(outputs)],
                "properties": {} if n.type == "Note" else {"Node name for S&R": n.type},
                "widgets_values": [_widget_value(n, w, defaults) for w in widget_names]}
        if n.title:
            node["title"] = n.title
        if n.type == "Note":
            node.update(color="#432", bgcolor="#653")
        ui_nodes.append(node)
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"openuni/{name}")), "revision": 0,
            "last_node_id": max(by_id), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}}, "version": 0.4}


def _widget_types(type_: str, node_classes: dict) -> dict:
    if type_ in CORE_NODES:
        return {}
    out = {}
    for section in node_classes[type_].INPUT_TYPES().values():
        for name, (kind, *_) in section.items():
            out[name] = "COMBO" if isinstance(kind, list) else kind
    return out


def _execution_order(nodes: list[N]) -> dict[int, int]:
    done: dict[int, int] = {}
    pending = sorted(nodes, key=lambda n: n.id)
    while pending:
        for n in pending:
            if all(src in done for src, _ in n.links.values()):
                done[n.id] = len(done)
                pending.remove(n)
                break
    return done


def api_workflow(name: str, node_classes: dict, tiny: bool = True) -> dict:
    """The graph in API format (what the frontend's "Export (API)" writes); Notes are UI-only and dropped."""
    out = {}
    for n in WORKFLOWS[name]:
        if n.type == "Note":
            continue
        _, widget_names, _ = node_shape(n.type, node_classes)
        defaults = _defaults(n.type, node_classes)
        values = {**n.widgets, **(n.tiny if tiny else {})}
        inputs = {}
        for w in widget_names:
            if w in ("control_after_generate", "upload") or w in n.links:
                continue
            inputs[w] = values.get(w, defaults.get(w))
        for inp, (src, slot) in n.links.items():
            inputs[inp] = [str(src), slot]
        display = getattr(node_classes.get(n.type), "DISPLAY_NAME", None)
        out[str(n.id)] = {"inputs": inputs, "class_type": n.type, "_meta": {"title": n.title or display or n.type}}
    return out


def render(node_classes: dict, display_names: dict) -> dict[Path, str]:
    files = {}
    for name in WORKFLOWS:
        api = api_workflow(name, node_classes)
        for node_id, node in api.items():
            node["_meta"]["title"] = next(n.title for n in WORKFLOWS[name] if n.id == int(node_id)) \
                or display_names.get(node["class_type"], _core_title(node["class_type"]))
        files[OUT / f"{name}.json"] = json.dumps(ui_workflow(name, node_classes), indent=2, ensure_ascii=False) + "\n"
        files[OUT / "api" / f"{name}.json"] = json.dumps(api, indent=2, ensure_ascii=False) + "\n"
    return files


def _core_title(type_: str) -> str:
    return {"LoadImage": "Load Image", "SaveImage": "Save Image", "ImageScaleBy": "Upscale Image By",
            "VAEDecode": "VAE Decode", "VAEEncodeForInpaint": "VAE Encode (for Inpainting)",
            "LatentUpscaleBy": "Upscale Latent By"}.get(type_, type_)


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from comfy_pack import load_pack

    pack = load_pack()
    for path, text in render(pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print("wrote", path.relative_to(ROOT))


if __name__ == "__main__":
    main()
