"""Where model files live, what a complete folder holds, and the opt-in download of missing ones.

Nothing here touches the network unless `download_variant` is called explicitly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingModelFilesError, OpenUniError
from .variants import DCAE_REPO, OPENUNI_REPO, VARIANTS, Variant



@dataclass(frozen=True)
class Part:
    """One part of an OpenUni set: how users call it, which files make it complete, what a download fetches."""

    label: str
    key_files: tuple[str, ...]  # glob patterns inside the folder; an interrupted download lacks one of them
    downloads: tuple[str, ...]  # huggingface_hub allow_patterns: only the files OpenUni uses, nothing else
    fetch_note: str  # what the missing-files message says comes from the repo
    noun: str  # what the part is on disk, for "expected X, got Y" messages


PARTS = {
    "checkpoint": Part("OpenUni checkpoint", (), (), "the file", "an OpenUni checkpoint file (.pth or .safetensors)"),
    "mllm": Part("InternVL3", ("config.json", "tokenizer_config.json", "*.safetensors"),
                 ("*.json", "*.safetensors", "*.txt", "*.tiktoken", "*.model"), "whole repo",
                 "an InternVL3 folder (original or -hf format)"),
    "sana": Part("SANA", ("transformer/config.json", "transformer/*.safetensors", "scheduler/scheduler_config.json"),
                 ("model_index.json", "scheduler/*", "transformer/*"), "transformer/ and scheduler/",
                 "a SANA diffusers folder (transformer/, scheduler/)"),
    "vae": Part("DC-AE", ("config.json", "*.safetensors"), ("config.json", "*.safetensors"), "config.json + weights",
                "a DC-AE folder (config.json and weights)"),
}


def part_repo(part: str, variant: Variant | None) -> str:
    """The Hugging Face repo a part of `variant` comes from (a hint for both sizes when the variant is unknown)."""
    if part == "checkpoint":
        return OPENUNI_REPO
    if part == "vae":
        return DCAE_REPO
    if variant is not None and variant.custom:
        return f"the Hugging Face repo of {variant.mllm_repo if part == 'mllm' else variant.sana_repo}"
    if variant is None:
        released = [v for v in VARIANTS.values() if not v.test_only]
        return " or ".join(dict.fromkeys(part_repo(part, v) for v in released))
    return variant.mllm_repo if part == "mllm" else variant.sana_repo


@dataclass(frozen=True)
class ModelPaths:
    """The four parts of one OpenUni set on disk. vae None: the SANA folder's own vae/."""

    checkpoint: Path
    mllm: Path
    sana: Path
    vae: Path | None = None

    @property
    def vae_dir(self) -> Path:
        return self.vae if self.vae is not None else self.sana / "vae"

    def items(self) -> list[tuple[str, Path]]:
        return [("checkpoint", self.checkpoint), ("mllm", self.mllm), ("sana", self.sana), ("vae", self.vae_dir)]

    def fingerprint(self) -> str:
        """Changes when any part is replaced or rewritten: the identity of a loaded model (its conditioning is only
        valid for the same files) and the key of hosts' model caches."""
        h = hashlib.sha256()
        for _, path in self.items():
            h.update(file_stamp(path).encode())
        return h.hexdigest()[:16]


def file_stamp(path: Path) -> str:
    """resolved path | size | mtime of a file, or of a folder's config.json (transformer/config.json for SANA)."""
    path = Path(path)
    target = path
    for inner in ("config.json", "transformer/config.json"):
        if path.is_dir() and (path / inner).is_file():
            target = path / inner
            break
    try:
        st = target.stat()
        return f"{target.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return f"{path}|missing"


@dataclass(frozen=True)
class Layout:
    """The standard layout under ComfyUI/models/openuni/ (also used by the CLI's --models-dir)."""

    root: Path

    def checkpoint(self, name: str) -> Path:
        return self.root / name

    def mllm(self, repo: str) -> Path:
        return self.root / "mllm" / repo.split("/")[-1]

    def sana(self, repo: str) -> Path:
        return self.root / "sana" / repo.split("/")[-1]

    def vae(self, repo: str = DCAE_REPO) -> Path:
        return self.root / "vae" / repo.split("/")[-1]


@dataclass(frozen=True)
class Missing:
    part: str  # a PARTS key
    path: Path
    repo: str

    def line(self) -> str:
        return f"- {PARTS[self.part].label}: {self.path}  ←  {self.repo} ({PARTS[self.part].fetch_note})"


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OpenUniError(f"{what}: {Path(path).name} is missing in {Path(path).parent}. "
                           "The folder is incomplete; re-download it.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OpenUniError(f"{what}: {path} is not valid JSON ({e}); re-download it.") from e


def _config(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        return cfg if isinstance(cfg, dict) else {}
    except (OSError, ValueError):
        return {}


def what_is(path) -> tuple[str | None, str]:
    """Which part the file or folder at `path` is (a PARTS key, or None) and how to name it in a message.

    Reads at most two small config files, so every "expected X, got Y" message can afford it."""
    path = Path(path)
    if not path.exists():
        return None, "nothing (it does not exist)"
    if path.is_file():
        if path.suffix in (".pth", ".pt", ".safetensors"):
            return "checkpoint", f"a {path.suffix} file"
        return None, f"a {path.suffix or 'plain'} file"
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not entries:
        return None, "an empty folder" + (" (an interrupted download)" if (path / ".cache").exists() else "")
    if (path / "transformer" / "config.json").is_file() or _config(path / "model_index.json").get(
            "_class_name", "").startswith("Sana"):
        return "sana", PARTS["sana"].noun
    cfg = _config(path / "config.json")
    kind = cfg.get("_class_name") or cfg.get("model_type")
    if kind == "AutoencoderDC":
        return "vae", PARTS["vae"].noun
    if ("llm_config" in cfg and "vision_config" in cfg) or cfg.get("model_type") == "internvl":
        return "mllm", PARTS["mllm"].noun
    if kind == "SanaTransformer2DModel":
        return None, "the transformer/ folder inside a SANA folder"
    if kind:
        return None, f"a {kind} model folder"
    weights = sorted(p.name for p in entries if p.suffix in (".pth", ".pt", ".safetensors"))
    if weights:
        return None, f"a folder holding {', '.join(weights[:3])}{' …' if len(weights) > 3 else ''}"
    return None, "a folder without config.json"


def expect(part: str, path) -> None:
    """Raise OpenUniError when `path` is missing or is plainly something else than the `part` asked for (a SANA
    folder given as the InternVL3 folder, a folder given as the checkpoint file, ...), naming both sides.
    A folder of the right kind that lacks files is left to the config and weight readers, which name the file."""
    path = Path(path)
    want = PARTS[part]
    if not path.exists():
        raise OpenUniError(f"{want.label} not found: {path}. Put {want.noun} there (from {part_repo(part, None)}) "
                           "or give the right path.")
    found, description = what_is(path)
    is_file = path.is_file()
    if found == part or (part != "checkpoint" and found is None and not is_file):
        return
    fix = f"choose the {want.label} {'file' if part == 'checkpoint' else 'folder'} (from {part_repo(part, None)})"
    if part == "vae" and found == "sana" and what_is(path / "vae")[0] == "vae":
        fix = f"its DC-AE is the vae/ folder inside it, {path / 'vae'}"
    elif part == "checkpoint" and not is_file:
        fix = f"choose a checkpoint file, e.g. {VARIANTS['OpenUni-B-512'].checkpoints[-1]} from {OPENUNI_REPO}"
    raise OpenUniError(f"{path} is {description}, but {want.noun} is expected here; {fix}.")


def sana_transformer_config(sana_dir) -> dict:
    sana_dir = Path(sana_dir)
    expect("sana", sana_dir)
    cfg = read_json(sana_dir / "transformer" / "config.json", f"SANA folder {sana_dir}")
    if cfg.get("_class_name") not in (None, "SanaTransformer2DModel"):
        raise OpenUniError(f"{sana_dir}/transformer holds a {cfg.get('_class_name')}, not a SANA transformer.")
    if not list((sana_dir / "transformer").glob("*.safetensors")):
        raise OpenUniError(f"SANA folder {sana_dir}/transformer has no *.safetensors weights; re-download it.")
    return cfg


def sana_scheduler_config(sana_dir) -> dict:
    cfg = read_json(Path(sana_dir) / "scheduler" / "scheduler_config.json", f"SANA folder {sana_dir}")
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def vae_config(vae_dir) -> dict:
    vae_dir = Path(vae_dir)
    expect("vae", vae_dir)
    cfg = read_json(vae_dir / "config.json", f"DC-AE folder {vae_dir}")
    if cfg.get("_class_name") not in (None, "AutoencoderDC") or int(cfg.get("latent_channels", 32)) != 32:
        raise OpenUniError(f"{vae_dir} holds a {cfg.get('_class_name')} with {cfg.get('latent_channels')} latent channels; "
                           f"OpenUni needs the DC-AE f32c32 ({DCAE_REPO}).")
    if not list(vae_dir.glob("*.safetensors")):
        raise OpenUniError(f"DC-AE folder {vae_dir} has no *.safetensors weights; re-download it.")
    return cfg


def part_complete(part: str, path: Path) -> bool:
    """Whether a part's file or folder is there with its key files (an interrupted download leaves a folder holding
    only huggingface_hub's .cache/ or a config without weights: that part still counts as missing)."""
    path = Path(path)
    if part == "checkpoint":
        return path.is_file() and path.stat().st_size > 0
    return path.is_dir() and all(any(p.is_file() for p in path.glob(g)) for g in PARTS[part].key_files)


def guess_variant(checkpoint_name: str) -> Variant | None:
    """The released variant whose checkpoint file has this name, else None."""
    for v in VARIANTS.values():
        if Path(checkpoint_name).name in v.checkpoints:
            return v
    return None


def _wanted(paths: ModelPaths, variant: Variant | None) -> list[Missing]:
    return [Missing(part, path, part_repo(part, variant)) for part, path in paths.items()]


def missing_parts(variant: Variant, layout: Layout, checkpoint: str | None = None, *, mllm=None, sana=None,
                  vae=None) -> list[Missing]:
    """The parts of `variant` not complete where the caller resolved them (else in `layout`'s standard places)."""
    paths = ModelPaths(layout.checkpoint(checkpoint or variant.checkpoints[-1]),
                       Path(mllm or layout.mllm(variant.mllm_repo)), Path(sana or layout.sana(variant.sana_repo)),
                       Path(vae or layout.vae()))
    return [m for m in _wanted(paths, variant) if not part_complete(m.part, m.path)]


DOWNLOAD_SWITCH = "turn on download_missing to fetch them"  # the ComfyUI loader's switch; the CLI names its own


def missing_error(missing: list[Missing], variant: Variant | None,
                  how_to_download: str | None = DOWNLOAD_SWITCH) -> MissingModelFilesError:
    """The missing parts, one line each (path ← repo). `how_to_download`: the host's own way to fetch them, named
    only when it can (a released variant; None where the host has none, e.g. explicit paths on the command line)."""
    label = variant.name if variant else "the chosen OpenUni variant"
    fetch = how_to_download if how_to_download and variant is not None and not variant.test_only else None
    return MissingModelFilesError(
        f"Model files for {label} are missing:\n" + "\n".join(m.line() for m in missing)
        + "\nDownload them from the Hugging Face repos named above into those paths"
        + (f", or {fetch}." if fetch else ", or give the right path if a name is mistyped.")
    )


def check_present(paths: ModelPaths, how_to_download: str | None = DOWNLOAD_SWITCH) -> None:
    """Each part that is there must be the right kind (`expect`); absent parts (no checkpoint file; no folder, or
    one holding only hidden entries such as an interrupted download's .cache/) → one error listing each with its
    repo id and where it goes (see `missing_error` for `how_to_download`). A folder that is there but lacks files
    gets its own error from the config/weight readers, naming the file."""
    variant = guess_variant(paths.checkpoint.name)

    def absent(m: Missing) -> bool:
        if not m.path.exists():
            return True
        return m.part != "checkpoint" and m.path.is_dir() and not any(p.name[0] != "." for p in m.path.iterdir())

    missing = [m for m in _wanted(paths, variant) if absent(m)]
    for m in _wanted(paths, variant):
        if m not in missing:
            expect(m.part, m.path)
    if missing:
        raise missing_error(missing, variant, how_to_download)


def download_variant(variant: Variant, layout: Layout, checkpoint: str | None = None, *, mllm=None, sana=None,
                     vae=None, log=print) -> None:
    """Fetch the known files of a known variant into `layout` (explicit user choice only).

    huggingface_hub writes each file under a temporary name and renames it when complete, so an
    interrupted download never leaves a file that looks finished. `mllm`/`sana`/`vae` name where the
    caller already resolved those parts (e.g. models/LLM/…); a part present there is not fetched again.
    """
    if variant.test_only:
        raise OpenUniError(f"{variant.name} is a test model; there is nothing to download.")
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:
        raise OpenUniError("Downloading needs huggingface_hub: pip install huggingface_hub") from None
    name = checkpoint or variant.checkpoints[-1]
    if name not in variant.checkpoints:
        raise OpenUniError(f"{name!r} is not a released {variant.name} checkpoint; choose one of {variant.checkpoints}.")
    todo = missing_parts(variant, layout, name, mllm=mllm, sana=sana, vae=vae)
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
        for m in todo:
            log(f"[OpenUni] downloading {m.repo} → {m.path}")
            if m.part == "checkpoint":
                hf_hub_download(OPENUNI_REPO, name, local_dir=str(layout.root))
            else:
                snapshot_download(m.repo, local_dir=str(m.path), allow_patterns=list(PARTS[m.part].downloads))
    except Exception as e:  # network errors come in many types (requests, httpx, hub's own)
        raise MissingModelFilesError(
            f"Download failed ({type(e).__name__}: {str(e)[:300]}). Check the network, or fetch the files by hand:\n"
            + "\n".join(m.line() for m in missing_parts(variant, layout, name, mllm=mllm, sana=sana, vae=vae))
        ) from e


def weight_differences(want: dict, have: dict) -> str:
    """How a folder's weights (name → shape) differ from what its config describes (see `list_differences`)."""
    return list_differences([k for k in want if k not in have], [k for k in have if k not in want],
                            [f"{k}: {list(have[k])} in the file, {list(want[k])} in config.json" for k in want
                             if k in have and tuple(have[k]) != tuple(want[k])])


def list_differences(missing, unexpected, reshaped) -> str:
    """ "N missing (a, b, …); N unexpected (…); N of another shape (…)", up to five names each; "" if none."""
    return "; ".join(f"{len(keys)} {what} ({', '.join(list(keys)[:5])}{', …' if len(keys) > 5 else ''})"
                     for what, keys in (("missing", missing), ("unexpected", unexpected),
                                        ("of another shape", reshaped)) if keys)
