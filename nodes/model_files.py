"""Model folders: registering them with ComfyUI, listing them for the loader's dropdowns, resolving picks.

Layout (all registered through `folder_paths`, so `extra_model_paths.yaml` can add more roots):

    models/openuni/                 OpenUni checkpoints (*.pth, *.safetensors) directly inside
    models/openuni/mllm/<folder>    InternVL3 folders (original OpenGVLab or -hf format)
    models/openuni/sana/<folder>    SANA diffusers folders (transformer/ + scheduler/)
    models/openuni/vae/<folder>     DC-AE f32c32 diffusers folders
    models/LLM/<folder>             also searched for InternVL3 folders (listed as "LLM/<folder>")
    models/diffusers/<folder>       also searched for SANA and DC-AE folders (listed as "diffusers/<folder>")

A dropdown value is only ever resolved by looking it up in a fresh listing of those folders, so a
name can never point outside them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from . import comfy_services as comfy
from ..openuni_core.errors import OpenUniError
from ..openuni_core.files import PARTS, Layout, ModelPaths, guess_variant, part_repo
from ..openuni_core.variants import VARIANTS, Variant

CHECKPOINT_EXTENSIONS = (".pth", ".safetensors")
AUTO = "auto"
FOLDER_KINDS = ("mllm", "sana", "vae")
# folder_paths names: ours, plus the shared folders other packs use for the same kinds of models.
OPENUNI = "openuni"
OWN_SUBFOLDER = {"mllm": "openuni_mllm", "sana": "openuni_sana", "vae": "openuni_vae"}
SHARED = {"mllm": ("LLM",), "sana": ("diffusers",), "vae": ("diffusers",)}


def register_folders() -> None:
    """Add the OpenUni folders to ComfyUI's `folder_paths` (idempotent; no-op without ComfyUI)."""
    fp = comfy.folder_paths()
    if fp is None:
        return
    root = os.path.join(fp.models_dir, OPENUNI)
    _add(fp, OPENUNI, root)
    for kind, name in OWN_SUBFOLDER.items():
        _add(fp, name, os.path.join(root, kind))
    if "LLM" not in fp.folder_names_and_paths:
        _add(fp, "LLM", os.path.join(fp.models_dir, "LLM"))
    paths, exts = fp.folder_names_and_paths[OPENUNI]
    if not exts:  # created by us: tell other tools which files are checkpoints here
        fp.folder_names_and_paths[OPENUNI] = (paths, set(CHECKPOINT_EXTENSIONS))


def _add(fp, name: str, path: str) -> None:
    """Our default folder goes first, like ComfyUI's own defaults: extra_model_paths.yaml is read before custom
    nodes load, and its roots should add to models/openuni, not replace it as the download target."""
    try:
        fp.add_model_folder_path(name, path, is_default=True)
    except TypeError:  # ComfyUI before is_default existed
        fp.add_model_folder_path(name, path)


def _folder_paths(name: str) -> list[Path]:
    fp = comfy.folder_paths()
    if fp is None:
        return []
    try:
        return [Path(p) for p in fp.get_folder_paths(name)]
    except KeyError:
        return []


def openuni_roots() -> list[Path]:
    return _folder_paths(OPENUNI)


def layout() -> Layout:
    roots = openuni_roots()
    if not roots:
        raise OpenUniError("ComfyUI has no models/openuni folder registered; is the pack installed in custom_nodes?")
    return Layout(roots[0])


# ----- listing ------------------------------------------------------------------------------------------------

def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.name.lower())
    except OSError:
        return []


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def looks_like(kind: str, folder: Path) -> bool:
    """Recognise a folder of the given kind in shared folders (where other models live too)."""
    if kind == "mllm":
        cfg = _json(folder / "config.json")
        tags = [str(cfg.get("model_type", ""))] + [str(a) for a in cfg.get("architectures") or []]
        return any("internvl" in t.lower() for t in tags)
    if kind == "sana":
        return _json(folder / "transformer" / "config.json").get("_class_name") == "SanaTransformer2DModel"
    return _json(folder / "config.json").get("_class_name") == "AutoencoderDC"


def list_folders(kind: str) -> dict[str, Path]:
    """Dropdown name → folder, OpenUni's own folders first. Every subfolder of our own folders is listed
    (so an incomplete download still shows up and gets a clear error); shared folders only show folders
    that look like the right kind, one or two levels deep (`LLM/OpenGVLab/InternVL3-1B`)."""
    found: dict[str, Path] = {}
    seen: set[Path] = set()

    def add(name: str, path: Path) -> None:
        real = path.resolve()
        if name not in found and real not in seen:
            found[name] = path
            seen.add(real)

    own = [r / kind for r in openuni_roots()] + _folder_paths(OWN_SUBFOLDER[kind])
    for folder in own:
        for sub in _subdirs(folder):
            add(sub.name, sub)
    for shared in SHARED[kind]:
        for folder in _folder_paths(shared):
            for sub in _subdirs(folder):
                if looks_like(kind, sub):
                    add(f"{shared}/{sub.name}", sub)
                else:
                    for deeper in _subdirs(sub):
                        if looks_like(kind, deeper):
                            add(f"{shared}/{sub.name}/{deeper.name}", deeper)
    return found


def list_checkpoints() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in openuni_roots():
        try:
            files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in CHECKPOINT_EXTENSIONS)
        except OSError:
            continue
        for f in files:
            found.setdefault(f.name, f)
    return found


def released_checkpoints() -> list[str]:
    return [c for v in VARIANTS.values() if not v.test_only for c in v.checkpoints]


def checkpoint_choices() -> list[str]:
    """Files present first, then the released checkpoints not downloaded yet (so shared workflows that
    name them load without a red widget; running them explains how to get the file)."""
    local = list(list_checkpoints())
    return local + [c for c in released_checkpoints() if c not in local]


def folder_choices(kind: str) -> list[str]:
    return [AUTO] + list(list_folders(kind))


# ----- resolving dropdown picks -------------------------------------------------------------------------------

def check_name(name, what: str) -> str:
    """Refuse anything that is not a plain name relative to a model folder."""
    if not isinstance(name, str) or not name.strip():
        raise OpenUniError(f"No {what} chosen.")
    if any(not ch.isprintable() for ch in name):  # NUL bytes, newlines, escapes: never part of a listed name
        raise OpenUniError(f"{what} {name!r} contains control characters; it is not a name inside the ComfyUI model "
                           "folders. Pick one from the list.")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if (PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive
            or ".." in parts or name.startswith("~")):
        raise OpenUniError(f"{what} {name!r} is not a name inside the ComfyUI model folders; pick one from the list.")
    return name


def resolve_checkpoint(name: str) -> Path:
    check_name(name, "Checkpoint")
    local = list_checkpoints()
    if name in local:
        return local[name]
    if name in released_checkpoints():
        return layout().checkpoint(name)  # not downloaded yet; reported as missing by the loader
    raise OpenUniError(f"Checkpoint {name!r} is not in {_where_checkpoints()}. Put it there and refresh (press R).")


def resolve_folder(kind: str, name: str, variant: Variant | None, checkpoint_name: str, sana: Path | None = None):
    label = PARTS[kind].label
    check_name(name, f"{label} folder")
    if name != AUTO:
        listing = list_folders(kind)
        if name not in listing:
            raise OpenUniError(f"{label} folder {name!r} is not in {_where(kind)}. Put it there and refresh (press R).")
        return listing[name]
    if variant is None:
        raise OpenUniError(
            f"'auto' cannot tell which {label} folder belongs to {checkpoint_name}: it is not a released OpenUni "
            f"file name. Pick the {label} folder in the list instead.")
    repo = part_repo(kind, variant)
    want = repo.split("/")[-1]
    names = {want.lower(), f"{want}-hf".lower()}
    for path in list_folders(kind).values():
        if path.name.lower() in names:
            return path
    if kind == "vae" and sana is not None and (sana / "vae" / "config.json").is_file():
        return None
    lay = layout()
    return {"mllm": lay.mllm, "sana": lay.sana, "vae": lay.vae}[kind](repo)


def resolve(checkpoint: str, mllm: str, sana: str, vae: str) -> ModelPaths:
    """Dropdown picks → paths (vae None: the SANA folder's own vae/); 'auto' folders need a released checkpoint name."""
    for name, what in ((checkpoint, "Checkpoint"), (mllm, "InternVL3 folder"), (sana, "SANA folder"),
                       (vae, "DC-AE folder")):
        check_name(name, what)  # every name, before any folder is listed or read
    ckpt = resolve_checkpoint(checkpoint)
    variant = guess_variant(checkpoint)
    mllm_dir = resolve_folder("mllm", mllm, variant, checkpoint)
    sana_dir = resolve_folder("sana", sana, variant, checkpoint)
    vae_dir = resolve_folder("vae", vae, variant, checkpoint, sana=sana_dir)
    return ModelPaths(ckpt, mllm_dir, sana_dir, vae_dir)


def _where_checkpoints() -> str:
    return " or ".join(str(r) for r in openuni_roots()) or "models/openuni"


def _where(kind: str) -> str:
    places = [str(r / kind) for r in openuni_roots()] + [str(p) for p in _folder_paths(OWN_SUBFOLDER[kind])]
    places += [str(p) for s in SHARED[kind] for p in _folder_paths(s)]
    return ", ".join(dict.fromkeys(places)) or f"models/openuni/{kind}"
