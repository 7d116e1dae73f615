"""Loaded OpenUni models by their loader inputs, held WEAKLY.

ComfyUI's node cache owns a loaded model: it keeps the loader's outputs while the inputs are unchanged (so the
loader does not run again) and drops them when they change, when the node leaves the graph, or on "Free
memory". The pack keeps no strong reference of its own, so a model is freed as soon as ComfyUI lets go of it;
this registry only lets two loader nodes with identical inputs (or a re-run after ComfyUI re-executes the
loader) share the one engine that is still alive.
"""

from __future__ import annotations

import threading
import weakref

_lock = threading.Lock()
_alive: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()


def get(key: tuple):
    with _lock:
        return _alive.get(key)


def put(key: tuple, model) -> None:
    with _lock:
        _alive[key] = model
