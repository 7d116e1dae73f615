"""Before the benchmark writes its multi-gigabyte model files: say what, how much, where, and how to free it."""

from __future__ import annotations

import shutil
from pathlib import Path

GIB = 2**30
HEADROOM = GIB  # left free beyond the files themselves (the partial copies are renamed, not duplicated)


def announce_writes(writes: list[tuple[str, int]], cache: Path, log=print) -> None:
    """writes: (name, bytes) of each file or folder about to be written under `cache`. Logs one line with the total,
    each part, the place and the command that frees it; raises SystemExit (nothing written) when the disk there has
    less room than the files need plus HEADROOM."""
    total = sum(size for _, size in writes)
    if not total:
        return
    cache = Path(cache).absolute()
    parts = ", ".join(f"{name} {size / GIB:.2f}" for name, size in writes)
    log(f"[bench] writing {total / GIB:.1f} GiB of random real-size model files to {cache} ({parts} GiB); later runs "
        f"reuse them. To free the space: rm -rf {cache}")
    free = shutil.disk_usage(_existing(cache)).free
    if free < total + HEADROOM:
        raise SystemExit(f"[bench] error: {_existing(cache)} has {free / GIB:.1f} GiB free, and these files need "
                         f"{total / GIB:.1f} GiB (+{HEADROOM / GIB:.0f} GiB headroom). Free some space, or write them "
                         "elsewhere with --cache DIR (or OPENUNI_BENCH_CACHE=DIR).")


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
