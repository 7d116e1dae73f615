"""Where model files live, what a complete folder holds, and the opt-in download of missing ones.

Nothing here touches the network unless `download_variant` is called explicitly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingModelFilesError, OpenUniError
from .variants import DCAE_REPO, OPENUNI_REPO, VARIANTS, Variant

# Only these files are ever fetched: the parts OpenUni uses, nothing else from the repos.
SANA_PATTERNS = ["model_index.json", "scheduler/*", "transformer/*"]
DCAE_PATTERNS = ["config.json", "*.safetensors"]
MLLM_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.tiktoken", "*.model"]


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
    part: str
    path: Path
    repo: str
    files: str

    def line(self) -> str:
        return f"- {self.part}: {self.path}  ←  {self.repo} ({self.files})"


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OpenUniError(f"{what}: {Path(path).name} is missing in {Path(path).parent}. "
                           "The folder is incomplete; re-download it.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OpenUniError(f"{what}: {path} is not valid JSON ({e}); re-download it.") from None


def sana_transformer_config(sana_dir) -> dict:
    sana_dir = Path(sana_dir)
    if not sana_dir.is_dir():
        raise OpenUniError(f"SANA folder not found: {sana_dir}.")
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
    if not vae_dir.is_dir():
        raise OpenUniError(f"DC-AE folder not found: {vae_dir}.")
    cfg = read_json(vae_dir / "config.json", f"DC-AE folder {vae_dir}")
    if cfg.get("_class_name") not in (None, "AutoencoderDC") or int(cfg.get("latent_channels", 32)) != 32:
        raise OpenUniError(f"{vae_dir} holds a {cfg.get('_class_name')} with {cfg.get('latent_channels')} latent channels; "
                           f"OpenUni needs the DC-AE f32c32 ({DCAE_REPO}).")
    if not list(vae_dir.glob("*.safetensors")):
        raise OpenUniError(f"DC-AE folder {vae_dir} has no *.safetensors weights; re-download it.")
    return cfg


# The files without which a part is not there yet (an interrupted download leaves a folder holding only
# huggingface_hub's .cache/ or a config without weights: that part must still count as missing).
KEY_FILES = {
    "InternVL3": ("config.json", "tokenizer_config.json", "*.safetensors"),
    "SANA": ("transformer/config.json", "transformer/*.safetensors", "scheduler/scheduler_config.json"),
    "DC-AE": ("config.json", "*.safetensors"),
}


def part_complete(part: str, path: Path) -> bool:
    path = Path(path)
    if part == "OpenUni checkpoint":
        return path.is_file() and path.stat().st_size > 0
    return path.is_dir() and all(any(p.is_file() for p in path.glob(pattern)) for pattern in KEY_FILES[part])


def guess_variant(checkpoint_name: str) -> Variant | None:
    for v in VARIANTS.values():
        if Path(checkpoint_name).name in v.checkpoints:
            return v
    return None


def _parts(checkpoint: Path, mllm: Path, sana: Path, vae: Path, mllm_repo: str, sana_repo: str) -> list[Missing]:
    """The four parts of a set, each with where it goes and where it comes from."""
    return [
        Missing("OpenUni checkpoint", checkpoint, OPENUNI_REPO, checkpoint.name),
        Missing("InternVL3", mllm, mllm_repo, "whole repo"),
        Missing("SANA", sana, sana_repo, "transformer/ and scheduler/"),
        Missing("DC-AE", vae, DCAE_REPO, "config.json + weights"),
    ]


def missing_parts(variant: Variant, layout: Layout, checkpoint: str | None = None, *, mllm=None, sana=None,
                  vae=None) -> list[Missing]:
    parts = _parts(layout.checkpoint(checkpoint or variant.checkpoints[-1]),
                   Path(mllm or layout.mllm(variant.mllm_repo)), Path(sana or layout.sana(variant.sana_repo)),
                   Path(vae or layout.vae()), variant.mllm_repo, variant.sana_repo)
    return [m for m in parts if not part_complete(m.part, m.path)]


def missing_error(missing: list[Missing], variant: Variant | None) -> MissingModelFilesError:
    label = variant.name if variant else "the chosen OpenUni variant"
    return MissingModelFilesError(
        f"Model files for {label} are missing:\n" + "\n".join(m.line() for m in missing)
        + "\nDownload them from the Hugging Face repos named above into those paths, or turn on "
          "download_missing (CLI: --download) to fetch them."
    )


def check_present(checkpoint: Path, mllm: Path, sana: Path, vae: Path) -> None:
    """Absent parts (no checkpoint file; no folder, or one holding only hidden entries such as an interrupted
    download's .cache/) → one error listing each with its repo id and where it goes. A folder that is there
    but lacks files gets its own error from the config/weight readers, naming the file."""
    variant = guess_variant(checkpoint.name)
    mllm_repo = variant.mllm_repo if variant else "OpenGVLab/InternVL3-1B (B) or OpenGVLab/InternVL3-2B (L)"
    sana_repo = variant.sana_repo if variant else "the SANA repo of your variant (see README)"
    parts = _parts(checkpoint, mllm, sana, vae, mllm_repo, sana_repo)
    missing = [m for m in parts if not (m.path.is_file() if m.part == "OpenUni checkpoint" else m.path.is_dir()
                                        and any(p.name[0] != "." for p in m.path.iterdir()))]
    if missing:
        raise missing_error(missing, variant)


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
            if m.part == "OpenUni checkpoint":
                hf_hub_download(OPENUNI_REPO, name, local_dir=str(layout.root))
            else:
                patterns = {"InternVL3": MLLM_PATTERNS, "SANA": SANA_PATTERNS, "DC-AE": DCAE_PATTERNS}[m.part]
                snapshot_download(m.repo, local_dir=str(m.path), allow_patterns=patterns)
    except Exception as e:  # network errors come in many types (requests, httpx, hub's own)
        raise MissingModelFilesError(
            f"Download failed ({type(e).__name__}: {str(e)[:300]}). Check the network, or fetch the files by hand:\n"
            + "\n".join(m.line() for m in missing_parts(variant, layout, name, mllm=mllm, sana=sana, vae=vae))
        ) from None
