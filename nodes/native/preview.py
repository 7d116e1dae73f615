"""Live previews while sampling: a linear 32→3 latent→RGB map fitted from the loaded DC-AE.

ComfyUI's latent2rgb previewer (latent_preview.Latent2RGBPreviewer) maps each latent cell of the sampler's x0
estimate to a colour with `latent_rgb_factors` (+ bias), one pixel per cell; the server scales the picture up.
No factors are published for DC-AE f32c32 and no TAESD exists for it, so we derive them from the DC-AE
itself: encode images made of flat colour blocks (one colour per 32×32 block, so every latent cell has a known
colour), and solve least squares between the scaled latents of the blocks' interior cells (a border cell sees its
neighbours through the encoder) and their colours in [-1,1]. The fit costs a few DC-AE encodes, so it is done
once per DC-AE (keyed by a fingerprint of its weights) and cached in ComfyUI's user folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from ...openuni_core.options import SPATIAL_COMPRESSION as PX
from ...openuni_core.vae_tiling import encode_one

log = logging.getLogger("OpenUni")
FIT_VERSION = 1  # bump when the fitting method changes, so stale cached maps are refitted


@torch.no_grad()
def fit_latent_rgb(dcae, scaling_factor: float, *, cells: int = 12, images: int = 8, seed: int = 0):
    """(factors [32][3], bias [3], R²) mapping scaled DC-AE latents (x0 as the sampler sees it) to RGB in [-1,1].

    images of cells×cells flat random colours; the first few are one flat colour each (from a 5×5×5 grid), so
    the map also sees large uniform areas (8 images of 12×12 cells: 800 interior cells for 33 unknowns). Runs on
    the DC-AE's current device and dtype."""
    param = next(dcae.parameters())
    gen = torch.Generator("cpu").manual_seed(seed)
    colours = torch.rand(images, 3, cells, cells, generator=gen) * 2 - 1
    grid = torch.linspace(-1, 1, 5)
    flat = torch.stack(torch.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    k = min(images, 5)
    colours[:k] = flat[torch.randperm(len(flat), generator=gen)[:k]][:, :, None, None].expand(-1, -1, cells, cells)
    pixels = colours.repeat_interleave(PX, 2).repeat_interleave(PX, 3)
    z = torch.cat([encode_one(dcae, one[None].to(param.device, param.dtype)).float().cpu() for one in pixels])
    z = z * scaling_factor
    x = z[:, :, 1:-1, 1:-1].permute(0, 2, 3, 1).reshape(-1, z.shape[1]).double()
    y = colours[:, :, 1:-1, 1:-1].permute(0, 2, 3, 1).reshape(-1, 3).double()
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    solution = torch.linalg.lstsq(xb, y).solution
    r2 = 1 - ((xb @ solution - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    return solution[:-1].float().tolist(), solution[-1].float().tolist(), float(r2)


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Identity of a module's weights without hashing all of them: every tensor's name, shape, dtype and first
    values (what differs between two DC-AE files)."""
    h = hashlib.sha256(f"v{FIT_VERSION}".encode())
    for name, t in module.state_dict().items():
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


def cache_folder() -> Path | None:
    """<ComfyUI user folder>/openuni/ (never the models folder or the pack), or None outside ComfyUI."""
    try:
        import folder_paths

        return Path(folder_paths.get_user_directory()) / "openuni"
    except (ImportError, AttributeError):
        return None


def latent_rgb(dcae, scaling_factor: float, prepare=None):
    """(factors, bias) for this DC-AE: read from the cache, else fitted and cached. prepare(): called before a
    fit, to bring the DC-AE whole onto its device. None when fitting fails (the sampler then runs without
    previews; the reason is logged)."""
    folder = cache_folder()
    key = weights_fingerprint(dcae)
    path = folder / f"latent_rgb_{key}.json" if folder is not None else None
    if path is not None and path.is_file():
        try:
            data = json.loads(path.read_text())
            return data["factors"], data["bias"]
        except (OSError, ValueError, KeyError):
            log.warning("[OpenUni] preview map %s is unreadable; fitting it again", path)
    try:
        if prepare is not None:
            prepare()
        factors, bias, r2 = fit_latent_rgb(dcae, scaling_factor)
    except Exception:  # a preview must never fail a generation
        log.exception("[OpenUni] could not fit the live-preview colours; sampling continues without previews")
        return None
    log.info("[OpenUni] fitted the live-preview colours of this DC-AE (R² %.2f)", r2)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"factors": factors, "bias": bias, "r2": r2, "scaling_factor": scaling_factor}))
        except OSError as e:
            log.warning("[OpenUni] could not cache the preview map in %s: %s", path, e)
    return factors, bias
