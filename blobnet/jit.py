"""numba's ``njit`` for the project's kernels, with an on-disk cache that knows all their sources.

Every kernel is compiled with ``cache=True``: the first start compiles and writes the machine code
beside the sources (``__pycache__``), later starts load it. numba checks only the file that
defines a kernel, not the modules it calls or whose constants it reads (a kernel of tree.py holds
position.py's rules and layout compiled in). So at import, the sources of every kernel module are
hashed; when the hash differs from the one recorded beside the cache, the cached kernels are
deleted and compile again. ``NUMBA_CACHE_DIR`` (another cache folder) is left to its owner.
``NUMBA_DISABLE_JIT=1`` runs every kernel as plain Python, to debug it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from numba import config, njit

__all__ = ["njit", "KERNEL_MODULES", "clear_stale_cache"]

# the modules whose kernels call one another or read one another's constants
KERNEL_MODULES = ("cards", "encode", "position", "deal", "features", "netcache", "tree", "ismcts")


def clear_stale_cache(sources: Path, cache: Path) -> bool:
    """Delete the cached kernels of ``KERNEL_MODULES`` in ``cache`` unless ``cache`` records the
    hash of their sources in ``sources``; record it. True when anything was stale."""
    digest = hashlib.sha256()
    for name in KERNEL_MODULES:
        digest.update((sources / f"{name}.py").read_bytes())
    stamp = cache / "kernels.sha256"
    try:
        if stamp.read_text() == digest.hexdigest():
            return False
    except OSError:
        pass
    try:
        cache.mkdir(exist_ok=True)
        for name in KERNEL_MODULES:
            for pattern in (f"{name}.*.nbi", f"{name}.*.nbc"):
                for f in cache.glob(pattern):
                    f.unlink(missing_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:  # a read-only checkout: numba then caches elsewhere or not at all
        pass
    return True


if not getattr(config, "CACHE_DIR", ""):  # NUMBA_CACHE_DIR: another folder, left to its owner
    _here = Path(__file__).resolve().parent
    clear_stale_cache(_here, _here / "__pycache__")
