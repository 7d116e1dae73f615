"""What the command line checks before it loads any model: output paths, input images, the model files and the
run's texts (against the tokenizer alone). Each check raises OpenUniError with one line naming the flag and the fix.

The checks on model files and texts are the engine's own (files.check_present, loading.inspect_openuni,
prompt_encoder.PromptRules, chat.prepare), called early with what they need: configs and a
tokenizer, which load in well under a second, against minutes for the weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .errors import OpenUniError
from .images import crop_box_to_multiple, resize_to_cover, to_pil
from .options import MAX_SIDE, MIN_SIDE, SPATIAL_COMPRESSION


# ----- outputs --------------------------------------------------------------------------------------------------
@dataclass
class Outputs:
    """The files a run will write, checked before the run; `prepare()` creates their missing folders."""

    files: list[Path] = field(default_factory=list)

    def add(self, flag: str, path: str, suffixes: tuple[str, ...], what: str, *, count: int = 1,
            overwrite: bool = False) -> list[Path]:
        """Check `path` for `flag` (count > 1: NAME_00.ext, NAME_01.ext, …) and return the files it names."""
        p = Path(path).expanduser()
        if p.is_dir() or str(path).endswith(("/", os.sep)):
            example = p / ("output" + suffixes[0])
            raise OpenUniError(f"{flag} {path} is a folder; give a file name in it, e.g. {example}.")
        if p.suffix.lower() not in suffixes:
            known = ", ".join(s for s in suffixes if s in (".png", ".jpg", ".webp", ".safetensors"))
            raise OpenUniError(f"{flag} {path} has {f'the extension {p.suffix!r}' if p.suffix else 'no extension'}; "
                               f"{what} needs one such as {known}, e.g. {p.with_suffix(suffixes[0]).name}.")
        folder = _nearest_existing(p.parent)
        if not folder.is_dir():
            raise OpenUniError(f"{flag} {path}: cannot create its folder, {folder} is a file.")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OpenUniError(f"{flag} {path}: cannot write in {folder} (permission denied); choose another place.")
        files = [p] if count == 1 else [p.with_name(f"{p.stem}_{i:02d}{p.suffix}") for i in range(count)]
        taken = [f for f in files if f.exists()]
        if taken and not overwrite:
            raise OpenUniError(f"{flag}: {taken[0]} already exists; choose another name, or add --overwrite to "
                               "replace it.")
        self.files += files
        return files

    def prepare(self) -> None:
        """Create the missing folders (the last step before the work, so a refused run leaves nothing behind)."""
        for f in self.files:
            try:
                f.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OpenUniError(f"Cannot create the folder {f.parent}: {e.strerror or e}.") from e


def _nearest_existing(folder: Path) -> Path:
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def image_suffixes() -> tuple[str, ...]:
    """File extensions Pillow can write, ".png" first."""
    Image.init()
    writable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    return (".png", *sorted(writable - {".png"}))


# ----- input images -----------------------------------------------------------------------------------------------
def read_image(flag: str, path: str) -> Image.Image:
    """The image file given to `flag` as RGB (the engine's to_pil: alpha onto white, the pixel limit)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise OpenUniError(f"{flag} {path} is a folder; give an image file.")
    if not p.is_file():
        raise OpenUniError(f"{flag} {path}: no such file (image not found).")
    try:
        return to_pil(p)
    except OpenUniError as e:
        raise OpenUniError(f"{flag}: {e}") from e


def init_image(path: str, width: int | None, height: int | None, say) -> tuple[Image.Image, int, int]:
    """The --image for image-to-image, at the size the run will use → (image, width, height).

    Without --width/--height the image keeps its size, centre-cropped to multiples of 32 (what OpenUni VAE Encode
    does in ComfyUI); with them it is scaled to cover that size and centre-cropped (images.resize_to_cover); with
    one of them the other follows the image's aspect ratio. Says in one line when the image changes."""
    image = read_image("--image", path)
    w0, h0 = image.size
    if width is None and height is None:
        try:
            box = crop_box_to_multiple(w0, h0)
        except OpenUniError:
            raise OpenUniError(f"--image {path} is {w0}×{h0}, smaller than {MIN_SIDE}×{MIN_SIDE}; give --width and "
                               "--height to resize it.") from None
        image = image.crop(box)
        if max(image.size) > MAX_SIDE:
            raise OpenUniError(f"--image {path} is {w0}×{h0}; sides above {MAX_SIDE} are not allowed. Give --width "
                               "and --height to resize it.")
        if image.size != (w0, h0):
            say(f"--image {w0}×{h0} is centre-cropped to {image.width}×{image.height} (sides are multiples of "
                f"{SPATIAL_COMPRESSION}; --width/--height resize instead)")
        return image, image.width, image.height
    width = width or _side_for(height * w0 / h0)
    height = height or _side_for(width * h0 / w0)
    if (w0, h0) != (width, height):
        image = resize_to_cover(image, width, height)
        say(f"--image {w0}×{h0} is scaled to cover {width}×{height} and centre-cropped")
    return image, width, height


def _side_for(pixels: float) -> int:
    return max(MIN_SIDE, min(MAX_SIDE, round(pixels / SPATIAL_COMPRESSION) * SPATIAL_COMPRESSION))


# ----- model files and texts ------------------------------------------------------------------------------------
def model_files(paths, how_to_download: str | None):
    """Presence, kinds, configs, checkpoint header and variant of a set of model files (no weights read) →
    loading.OpenUniFiles. `how_to_download`: this command's way to fetch missing files, if it has one."""
    from .files import check_present

    check_present(paths, how_to_download)  # before transformers and diffusers are even imported
    from .loading import inspect_openuni

    return inspect_openuni(paths.checkpoint, paths.mllm, paths.sana, paths.vae)


def tokenizer_and_context(mllm_info):
    """The InternVL3 folder's tokenizer and its LLM's context length: all the text checks need."""
    from .internvl import load_tokenizer

    return load_tokenizer(mllm_info.path), mllm_info.context


def prompt_rules(mllm_info):
    """The engine's PromptRules for this InternVL3 folder, from its tokenizer and config alone."""
    from .prompt_encoder import PromptRules

    return PromptRules(*tokenizer_and_context(mllm_info))
