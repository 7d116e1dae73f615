"""Where the parts of a loaded model run, and getting each onto its device when it is used.

A model has three parts — "mllm" (InternVL3 with the query bridge), "sana" and "vae" — each with a compute
device. The memory policy (options.MEMORY_POLICIES) decides where a part lives between uses: on its device,
or in CPU RAM with its weights copied in only while it runs (streaming.py). Hosts with their own memory
manager (ComfyUI) hand the engine a different object with the same `use` / `device` methods; this one is
what the engine uses on its own (the CLI, scripts).
"""

from __future__ import annotations

import contextlib
import gc
from typing import Callable

import torch
from torch import nn

from .devices import CPU
from .errors import OpenUniError, OpenUniOutOfMemoryError
from .options import MEMORY_POLICIES
from .streaming import largest_layer_bytes, weights_on

PARTS = ("mllm", "sana", "vae")


class Placement:
    """Moves parts to their devices per the memory policy.

    parts: part name → its modules. devices: part name → compute device. policy: one of MEMORY_POLICIES.
    streamed: the module of the "mllm" part that an offloaded encode streams layer by layer (the InternVL3 model);
    on_host: its modules that stay in CPU RAM even then (its embedding tables).
    request_memory: host hook, called with (bytes, device) before weights move onto an accelerator, so the
    host can make room first.
    """

    def __init__(self, parts: dict[str, list[nn.Module]], devices: dict[str, torch.device], policy: str = "none",
                 streamed: nn.Module | None = None, on_host: Callable[[], list[nn.Module]] = list):
        if policy not in MEMORY_POLICIES:
            raise OpenUniError(f"Unknown offload policy {policy!r}; choose one of {', '.join(MEMORY_POLICIES)}.")
        self.parts, self.devices, self.policy = parts, devices, policy
        self.streamed, self.on_host = streamed, on_host
        self.request_memory: Callable[[int, torch.device], None] | None = None
        self._where: dict[str, torch.device] = {}
        for part in parts:
            self._move(part, CPU if self.offloaded(part) else devices[part])

    def device(self, part: str) -> torch.device:
        return self.devices[part]

    def dtype(self, part: str) -> torch.dtype:
        """The floating dtype the part computes in."""
        return next(p.dtype for m in self.parts[part] for p in m.parameters() if p.is_floating_point())

    def cast(self, part: str, dtype: torch.dtype) -> None:
        """Convert the part's weights to `dtype` where they are (precision.py, after an fp16 overflow)."""
        for m in self.parts[part]:
            nn.Module.to(m, dtype)  # diffusers' own `to` warns about fp32-kept modules these parts have none of

    def offloaded(self, part: str) -> bool:
        """Whether the policy keeps this part in CPU RAM between uses (never for parts that compute on the CPU)."""
        if self.devices[part].type == "cpu":
            return False
        return self.policy == "sequential" or (self.policy == "mllm" and part == "mllm")

    def part_bytes(self, part: str) -> int:
        return sum(map(param_bytes, self.parts[part]))

    def _move(self, part: str, device: torch.device) -> None:
        if self._where.get(part) == device:
            return
        if device.type != "cpu" and self.request_memory is not None:
            self.request_memory(self.part_bytes(part), device)
        for m in self.parts[part]:
            m.to(device)
        self._where[part] = device

    @contextlib.contextmanager
    def use(self, part: str, what: str, per_layer: bool = False):
        """Run a block with `part` on its compute device.

        An offloaded part keeps its weights in CPU RAM; they are copied to the device for the block and dropped
        after. per_layer: the MLLM gets one layer's weights at a time (for its single encoding pass; captioning
        runs the LLM once per generated token and brings it in whole). Out of memory inside the block is raised
        as OpenUniOutOfMemoryError (what: "sampling 1×512×512", …, for the message) after the failed step's
        tensors are freed, and the model stays usable.
        """
        device, offloaded = self.devices[part], self.offloaded(part)
        # Afterwards the dropped weight copies go back to the driver, for other models and programs.
        settle = torch.cuda.empty_cache if offloaded and device.type == "cuda" else None
        with out_of_memory_as_error(what, device, after=settle):
            if offloaded:
                self._move(part, CPU)  # where an offloaded part lives between uses (no-op when there)
                layered = [self.streamed] if per_layer and part == "mllm" and self.streamed is not None else []
                whole = [m for m in self.parts[part] if m not in layered]
                on_host = self.on_host() if layered else []
                need = sum(map(param_bytes, whole)) + sum(largest_layer_bytes(m, on_host) for m in layered)
                if self.request_memory is not None:
                    self.request_memory(need, device)
                self._make_room(need, device, keep=part)
                placed = weights_on(device, whole=whole, per_layer=layered, on_host=on_host)
            else:
                self._move(part, device)  # no-op when already there
                placed = contextlib.nullcontext()
            with placed:
                yield

    def _make_room(self, need: int, device: torch.device, keep: str) -> None:
        """Park our own resident parts on the CPU while `need` bytes (plus a margin for activations) do not fit
        beside them; each comes back on its next use. E.g. captioning under the MLLM-offload policy on an 8 GB
        GPU, where InternVL3-2B whole does not fit next to SANA and DC-AE."""
        if device.type != "cuda":
            return
        free = self._free_bytes(device)
        for other in ("vae", "sana", "mllm"):
            if free >= need * 1.1 + (256 << 20):
                break
            if other != keep and self._where.get(other) == device:
                self._move(other, CPU)  # its blocks return to torch's cache, where the new weights can use them
                free += self.part_bytes(other)

    @staticmethod
    def _free_bytes(device: torch.device) -> int:
        """Free device memory, counting what torch has cached but not handed out."""
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)

    def offload_all(self) -> None:
        """Move every part to the CPU (a host's "free memory" request); each comes back on its next use and then
        follows the policy again."""
        for part in self.parts:
            self._move(part, CPU)
        release_memory()

    def where(self) -> dict[str, str]:
        """Where each part (mllm, sana, vae) is now."""
        return {part: str(dev) for part, dev in self._where.items()}

    def on_accelerator(self) -> bool:
        return any(dev.type != "cpu" for dev in self._where.values())


def param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    text = str(e).lower() if isinstance(e, RuntimeError) else ""
    return "out of memory" in text or "can't allocate memory" in text


OUT_OF_MEMORY_ADVICE = ("Try a lower-memory policy (offload the MLLM, or sequential offload), a smaller width/height "
                        "or batch size, or bf16/fp16 precision.")


@contextlib.contextmanager
def out_of_memory_as_error(what: str, device, advice: str = OUT_OF_MEMORY_ADVICE, after=None):
    """Out of memory inside the block is raised as OpenUniOutOfMemoryError ("Out of memory while <what> on <device>.
    <advice>", from the original), after the failed step's tensors are freed: the error is raised outside the
    except clause, and memory released first, since those tensors can sit in reference cycles (traceback frames).
    after(): called when the block ends without another error, before the out-of-memory error is raised."""
    failure = None
    try:
        yield
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        failure = e
    if after is not None:
        after()
    if failure is not None:
        release_memory()
        raise OpenUniOutOfMemoryError(f"Out of memory while {what} on {device}. {advice}") from failure


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
