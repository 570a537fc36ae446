"""Where the evaluation's array arithmetic runs: numpy on the CPU, torch on a device (issue 22).

The probes' objective (probes.py) and the geometry resampler (geometry.py) are written once against an array
namespace `xp`; `Backend(device)` picks it. device None: numpy on the CPU, the faster of the two there (its
AVX-512 exp is ~3x torch's in float64 on this project's CPU, and scikit-learn's own loss ran on numpy BLAS);
a torch device: torch on it, a GPU where evaluation runs device-native (evaluate.evaluation_device);
torch.device("cpu") runs the torch code on the CPU, as the tests do to check it gives the numpy numbers.
This class holds the few calls whose spelling differs between the two; everything is float64. Without a
device the one of the device-native evaluation under way is taken (`on_device`, set by evaluate).
"""
from __future__ import annotations

import contextlib

import numpy as np

_CURRENT = None  # the device of the device-native evaluation under way (on_device); None: the CPU path


def current_device():
    """Where evaluate's probes, geometry and learned poolings compute now: a torch device, or None (numpy)."""
    return _CURRENT


@contextlib.contextmanager
def on_device(device):
    """Evaluate's units inside the block compute on `device` (evaluate_encoders, device-native)."""
    global _CURRENT
    before, _CURRENT = _CURRENT, device
    try:
        yield
    finally:
        _CURRENT = before


def evaluation_device(device=None):
    """Where evaluate runs device-native (every unit in one process, probes, geometry and learned poolings as
    torch on the device): the device asked for, else the GPU where there is one; None: the CPU path (units in
    worker processes, numpy). device="cpu" runs the device-native path on the CPU (the tests)."""
    import torch
    if device is not None:
        return torch.device(device)
    return torch.device("cuda") if torch.cuda.is_available() else None


class Backend:
    def __init__(self, device=None):
        device = device if device is not None else current_device()  # None in neither: numpy
        self.torch = device is not None
        if self.torch:
            import torch
            self.xp, self.device = torch, torch.device(device)
            # geometry resamples per batched step: a GPU takes many at once, the CPU one at a time
            self.per_block = 64 if self.device.type != "cpu" else 1
        else:
            self.xp, self.device, self.per_block = np, None, 1

    def asarray(self, a):
        if self.torch:
            return self.xp.as_tensor(np.asarray(a) if not self.xp.is_tensor(a) else a, dtype=self.xp.float64,
                                     device=self.device)
        return np.asarray(a, dtype=np.float64)

    def index(self, idx):
        """Integer indices for this backend."""
        return self.xp.as_tensor(np.asarray(idx, dtype=np.int64), device=self.device) if self.torch \
            else np.asarray(idx, dtype=np.int64)

    def nonzero(self, mask):
        return self.xp.nonzero(mask).flatten() if self.torch else np.flatnonzero(mask)

    def take2(self, M, rows, cols):
        """M[rows][:, cols] by one gather from the flat matrix (2x faster than np.ix_ on the CPU)."""
        return self.xp.take(M, (rows[:, None] * M.shape[1] + cols[None, :]).reshape(-1)).reshape(len(rows), len(cols))

    def amax(self, a, axis: int):
        """Maximum along `axis`, kept as a length-1 axis."""
        return self.xp.amax(a, axis, keepdim=True) if self.torch else np.amax(a, axis, keepdims=True)

    def flip(self, a):
        return self.xp.flip(a, (-1,)) if self.torch else a[..., ::-1]

    def numpy(self, a) -> np.ndarray:
        return a.detach().cpu().numpy() if self.torch else np.asarray(a)

    def scalar(self, a) -> float:
        return float(a)
