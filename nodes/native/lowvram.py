"""Let ComfyUI load diffusers/transformers modules partially ("lowvram"), as it does its own models.

When a model does not fit its budget, `comfy.model_patcher.ModelPatcher.load` keeps some leaf layers in RAM
and only layers that follow its weight-casting protocol (`comfy_cast_weights`, `weight_function`,
`bias_function`: what every `comfy.ops` layer has) can run that way, copying their weights to the compute
device per call. Any other layer that does not fit is silently left on the CPU and the first forward fails
with a device mismatch. Parameters owned directly by non-leaf modules (SANA's `scale_shift_table`,
InternViT's `lambda_1`) and buffers are never in its load list at all, and weight patches aimed at such
parameters are accepted by `add_patches` but never applied.

So (1) every parameter-holding leaf module gets the protocol by swapping its class for a subclass with
`CastOnForward` mixed in (same object, same parameters: the engine, PEFT and the patcher's weight patches
keep seeing them; nothing changes until ComfyUI turns casting on), and (2) an ON_LOAD callback puts the
"orphan" tensors on the load device and applies their patches. Both are ComfyUI extension points used the
way comfy.ops uses them; no ComfyUI function is replaced.

Why not comfy.ops' layer classes: they cover Linear/Conv/GroupNorm/LayerNorm/Embedding, not diffusers'
or Qwen2's RMSNorm and the other custom leaves these models hold, and `comfy.ops.cast_bias_weight`'s
signature has changed across ComfyUI versions; one mixin for every leaf covers all of them alike.
"""

from __future__ import annotations

import torch

_SUBCLASSES: dict[type, type] = {}


def _first_tensor(args, kwargs) -> torch.Tensor | None:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a
    return None


class CastOnForward:
    """Mixin giving a leaf module ComfyUI's weight-casting protocol (the attribute names comfy.ops uses).

    comfy_cast_weights: set True by ModelPatcher when the layer stays in RAM (partial load).
    weight_function / bias_function: patches (e.g. LoRA as LowVramPatch) ModelPatcher attaches to a layer it
    did not load; applied to the on-device copy here. Weights and buffers go to the first tensor input's
    device for the call, as comfy.ops casts to the input's device.
    """

    comfy_cast_weights = False
    weight_function: list = []
    bias_function: list = []

    def forward(self, *args, **kwargs):
        if not (self.comfy_cast_weights or self.weight_function or self.bias_function):
            return super().forward(*args, **kwargs)
        ref = _first_tensor(args, kwargs)
        device = ref.device if ref is not None else None
        saved_p, saved_b = {}, {}
        try:
            for name, p in list(self._parameters.items()):
                if p is None:
                    continue
                functions = self.weight_function if name == "weight" else self.bias_function if name == "bias" else ()
                t = p.detach().to(device=device, copy=bool(functions))
                for f in functions:
                    t = f(t)
                saved_p[name] = p
                self._parameters[name] = t  # a plain tensor for this call only
            for name, b in list(self._buffers.items()):
                if b is not None and device is not None and b.device != device:
                    saved_b[name] = b
                    self._buffers[name] = b.to(device)
            return super().forward(*args, **kwargs)
        finally:
            self._parameters.update(saved_p)
            self._buffers.update(saved_b)


def _cast_class(cls: type) -> type:
    sub = _SUBCLASSES.get(cls)
    if sub is None:
        sub = type(cls.__name__, (CastOnForward, cls), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
        _SUBCLASSES[cls] = sub
    return sub


def is_param_leaf(m: torch.nn.Module) -> bool:
    """A module ModelPatcher's load list handles: it owns parameters and its children own none."""
    own = any(p is not None for p in m._parameters.values())
    return own and not any(True for c in m.children() for _ in c.parameters())


def make_cast_capable(root: torch.nn.Module) -> int:
    """Give every parameter-holding leaf of `root` the casting protocol, in place (comfy.ops layers already have
    it). Returns how many modules changed class; a module keeps its new class (isinstance still holds)."""
    n = 0
    for m in root.modules():
        if is_param_leaf(m) and not hasattr(m, "comfy_cast_weights"):
            m.__class__ = _cast_class(type(m))
            n += 1
    return n


def orphan_tensors(root: torch.nn.Module):
    """(state-dict key, module, "param" | "buffer", name) of the tensors ModelPatcher.load() never handles:
    direct parameters of non-leaf modules, and all buffers."""
    for mname, m in root.named_modules():
        prefix = f"{mname}." if mname else ""
        if not is_param_leaf(m):
            for name, p in m._parameters.items():
                if p is not None:
                    yield prefix + name, m, "param", name
        for name, b in m._buffers.items():
            if b is not None:
                yield prefix + name, m, "buffer", name


def place_orphans_on_load(patcher, device_to, lowvram_model_memory, force_patch_weights, full_load) -> None:
    """CallbacksMP.ON_LOAD: after every load, put the orphan tensors on the load device (a partial load leaves them
    where they were) and apply weight patches aimed at orphan parameters (load() skips them). Parameters move in
    place (`p.data = ...`), so modules sharing a Parameter object keep sharing it; patch_weight_to_device records
    the backup, so unpatching restores them like any other weight."""
    if device_to is None:
        return
    dev = torch.device(device_to)
    with torch.no_grad():
        for key, m, kind, name in orphan_tensors(patcher.model):
            t = m._parameters[name] if kind == "param" else m._buffers[name]
            if t.device != dev:
                moved = t.data.to(dev)
                if kind == "buffer":
                    m._buffers[name] = moved
                else:
                    try:
                        t.data = moved
                    except RuntimeError:  # tensor types that cannot swap storage (e.g. meta <-> cpu)
                        m._parameters[name] = torch.nn.Parameter(moved, requires_grad=t.requires_grad)
            if kind == "param" and key in patcher.patches and key not in patcher.backup:
                patcher.patch_weight_to_device(key, device_to=dev)


def enable_partial_loading(patcher) -> None:
    """Everything a ModelPatcher around diffusers/transformers modules needs for partial loading."""
    import comfy.patcher_extension

    make_cast_capable(patcher.model)
    patcher.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_LOAD, "openuni_orphans",
                                  place_orphans_on_load)
