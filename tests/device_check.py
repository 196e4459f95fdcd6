"""A strict device checker: the CPU plays two devices, so a CPU-only CI catches CUDA placement bugs.

Mechanism (a `TorchFunctionMode` plus patched collectives; test-only):

- The accelerator is ``cpu:0`` (a torch.device with an index), the host is plain ``cpu``. The checker makes
  `astrom3_hpc.distributed.device.compute_device()` return ``cpu:0`` and reports collectives as running on a backend
  that, like NCCL, only accepts accelerator tensors.
- Every tensor carries a tag, kept in weak dictionaries: DEVICE (created with ``device=cpu:0``, moved with
  ``.to(cpu:0)``, or computed from a DEVICE tensor) or HOST (created by project or test code without a device, by
  ``torch.from_numpy`` in the loader, or moved back with ``.cpu()``/``.to("cpu")``). Tensors made inside torch or
  DeepSpeed without a device (autograd's gradients, DeepSpeed's buffers) stay untagged and are not judged.
  ``Tensor.device`` reads ``cpu:0`` for DEVICE tensors, so ``torch.zeros(n, device=x.device)`` follows ``x``.
- An op that mixes DEVICE and HOST tensors raises `DeviceMixError`, as CUDA does ("Expected all tensors to be on
  the same device"); like CUDA, 0-dim HOST tensors are accepted as scalars, except by stack/cat.
- A collective (all_reduce, all_gather, reduce-scatter, broadcast) on a HOST tensor raises, as NCCL does ("No
  backend type associated with device type cpu"); ``.numpy()`` of a DEVICE tensor raises; ``.item()``,
  ``float()``, ``.tolist()`` of a DEVICE tensor, and project code copying one to the host, count as host syncs
  (``checker.syncs``).
- Every collective's (name, dtype) is recorded in ``checker.comm`` (what was communicated, e.g. for bf16 runs).

Install it for a block of code with ``with StrictDevice() as checker: ...``.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter

import torch
import torch.distributed as tdist
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

ACCEL = torch.device("cpu", 0)
HOST, DEVICE = "host", "device"
_JOIN = {"stack", "cat", "concat", "concatenate", "hstack", "vstack", "dstack"}
_SYNC = {"item", "tolist", "__float__", "__int__", "__bool__", "__index__"}
_COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_single", "reduce_scatter",
                "reduce_scatter_tensor", "reduce_scatter_single", "broadcast", "reduce", "all_to_all_single")


_DEVICE_PROP = torch.Tensor.__dict__.get("device") or torch._C.TensorBase.__dict__["device"]


class DeviceMixError(RuntimeError):
    pass


def _is_accel(d) -> bool | None:
    """True for the accelerator, False for the host, None if `d` names no device."""
    if isinstance(d, str):
        try:
            d = torch.device(d)
        except RuntimeError:
            return None
    if isinstance(d, torch.device):
        return d.type == "cuda" or (d.type == "cpu" and d.index is not None)
    return None


_SKIP = ("torch", "contextlib", __name__)


def _called_by_project() -> bool:
    """Whether the tensor method itself was called by project code (torch's own internals, such as clip_grad moving
    a coefficient to the gradients' device, are not: the checker cannot see their target as the accelerator)."""
    f = sys._getframe(2)
    while f is not None and f.f_globals.get("__name__", "") in (__name__, "torch.overrides"):
        f = f.f_back
    return f is not None and f.f_globals.get("__name__", "").startswith("astrom3_hpc")


def _from_project() -> bool:
    """Whether the innermost caller outside torch and this checker is project (or test) code, not DeepSpeed."""
    f = sys._getframe(2)
    while f is not None:
        mod = f.f_globals.get("__name__", "")
        if not mod.startswith(_SKIP):
            return not mod.startswith("deepspeed")
        f = f.f_back
    return False


class StrictDevice(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.tags = WeakIdKeyDictionary()
        self.syncs = Counter()
        self.comm: list[tuple[str, torch.dtype]] = []
        self.bf16_outputs = 0  # ops whose result came out bf16 (autocast at work)
        self._stack = contextlib.ExitStack()

    # -- tags ---------------------------------------------------------------------------------------------
    def tag(self, t, value=DEVICE):
        for x in tree_flatten(t)[0]:
            if isinstance(x, torch.Tensor):
                self.tags[x] = value
        return t

    def tag_module(self, module: torch.nn.Module) -> torch.nn.Module:
        for p in module.parameters():
            self.tags[p] = DEVICE
        for b in module.buffers():
            self.tags[b] = DEVICE
        return module

    def _tags(self, tensors):
        return [(t, self.tags.get(t)) for t in tensors]

    # -- the mode -----------------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "__get__" and getattr(func, "__self__", None) is _DEVICE_PROP:
            return ACCEL if self.tags.get(args[0]) == DEVICE else func(*args)
        tensors = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
        tagged = self._tags(tensors)
        on_dev = any(v == DEVICE for _, v in tagged)
        self_tag = self.tags.get(args[0]) if args and isinstance(args[0], torch.Tensor) else None

        if name in ("to", "cuda", "cpu") and args and isinstance(args[0], torch.Tensor):
            return self._move(func, name, args, kwargs, self_tag)
        if name == "numpy" and self_tag == DEVICE:
            raise DeviceMixError("can't convert a device tensor to numpy: copy it to the host first (.cpu())")
        if name in _SYNC and self_tag == DEVICE:
            self.syncs[name] += 1
        if on_dev and name != "__getitem__":
            host = [t for t, v in tagged if v == HOST]
            bad = [t for t in host if t.dim() > 0 or name in _JOIN]
            if bad:
                raise DeviceMixError(
                    f"{name}: expected all tensors to be on the same device, found device tensors and host "
                    f"tensor(s) of shape {[tuple(t.shape) for t in bad]} (a CUDA run fails here)")
        # Factories: a `device=` argument decides; without one, project code makes host tensors.
        dev_kw = kwargs.get("device")
        if "device" in kwargs and dev_kw is not None:
            kwargs = dict(kwargs, device=torch.device("cpu") if _is_accel(dev_kw) else dev_kw)
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16:
            self.bf16_outputs += 1
        if on_dev or (dev_kw is not None and _is_accel(dev_kw)):
            new = DEVICE
        elif any(v == HOST for _, v in tagged):
            new = HOST
        elif not tensors and dev_kw is None and _from_project():
            new = HOST
        else:
            return out
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not any(t is s for s in tensors):
                self.tags[t] = new
        return out

    def _move(self, func, name, args, kwargs, self_tag):
        src = args[0]
        target = None
        if name == "cuda":
            target = True
        elif name == "cpu":
            target = False
        else:
            for a in list(args[1:]) + [kwargs.get("device")]:
                if isinstance(a, torch.Tensor):  # x.to(other): other's place and dtype
                    args, kwargs = (src,), dict(kwargs, dtype=a.dtype)
                    target = self.tags.get(a) == DEVICE
                    break
                t = _is_accel(a)
                if t is not None:
                    target = t
                    break
        if target is False and name != "cpu" and not _from_project():
            target = None  # torch/DeepSpeed moving to "cpu" stands for their accelerator (DeepSpeed's is cpu)
        if target is False and self_tag == DEVICE and _called_by_project():
            self.syncs["to host"] += 1  # a copy back to the host waits for the accelerator, like .item()
        if target is None:  # dtype-only conversion: same place
            out = func(*args, **kwargs)
            if self_tag is not None and out is not src:
                self.tags[out] = self_tag
            return out
        kwargs = dict(kwargs)
        if "device" in kwargs:
            kwargs["device"] = "cpu"
        args = tuple("cpu" if _is_accel(a) is not None and not isinstance(a, torch.Tensor) else a
                     for a in args)
        if name == "cuda":
            out = src.clone()
        elif name == "cpu":
            out = src.clone() if self_tag == DEVICE else func(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
            if out is src and (self_tag == DEVICE) != target:
                out = src.clone()  # a real move makes a new tensor
        self.tags[out] = DEVICE if target else HOST
        return out

    # -- collectives --------------------------------------------------------------------------------------
    def _wrap(self, name, fn):
        def checked(*args, **kwargs):
            for t in tree_flatten((args, kwargs))[0]:
                if isinstance(t, torch.Tensor):
                    if self.tags.get(t) == HOST:
                        raise DeviceMixError(f"{name} on a host tensor of shape {tuple(t.shape)}: NCCL has no "
                                             f"backend for device type cpu")
                    self.comm.append((name, t.dtype))
            return fn(*args, **kwargs)
        return checked

    def __enter__(self):
        from astrom3_hpc.distributed import device as ddev

        for n in _COLLECTIVES:
            fn = getattr(tdist, n, None)
            if fn is not None:
                self._stack.enter_context(_patched(tdist, n, self._wrap(n, fn)))
        self._stack.enter_context(_patched(ddev, "compute_device", lambda: ACCEL))
        self._stack.enter_context(_patched(ddev, "comm_device", lambda group=None: ACCEL))
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._stack.close()


@contextlib.contextmanager
def _patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)
