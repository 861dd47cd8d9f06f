"""GPU speed settings for the DiT backends: bf16 weights, SDPA attention, CUDA graphs, eager fallback.

Guided sampling calls the network once forward and once backward (w.r.t. its input only)
per step, with fixed shapes for a whole render, which is what CUDA graphs need. We use
`torch.compile(mode="reduce-overhead")`, which records CUDA graphs for forward and backward.
Compilation can fail on some installs (no compiler, an unsupported op, a driver issue);
the wrapper then runs the eager network for the rest of the process and says so.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from .base import Model

log = logging.getLogger(__name__)


@dataclass
class SpeedSetup:
    """What `optimise` applied, for the benchmark report and the sidecar."""

    device: str
    dtype: str
    attention: list[str] = field(default_factory=list)
    compiled: bool = False
    fallback_reason: Optional[str] = None
    frame_multiple: int = 1


class EagerFallback:
    """Calls the compiled function; on the first failure switches to the eager one for good."""

    def __init__(self, compiled: Callable, eager: Callable, setup: SpeedSetup) -> None:
        self.compiled, self.eager, self.setup = compiled, eager, setup
        self.failed = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # compile/graph failures surface at the first call
                self.failed = True
                self.setup.compiled = False
                self.setup.fallback_reason = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("compiled network failed, running eager from now on: %s", self.setup.fallback_reason)
        return self.eager(*args, **kwargs)


def network_of(model: Model) -> torch.nn.Module:
    """The big network inside a backend's denoiser (the DiT, or the denoiser itself)."""
    for attr in ("transformer", "net"):
        net = getattr(model.denoiser, attr, None)
        if isinstance(net, torch.nn.Module):
            return net
    if isinstance(model.denoiser, torch.nn.Module):
        return model.denoiser
    raise TypeError(f"model {model.name!r} has no torch network to optimise")


def optimise(model: Model, *, device: str | torch.device = "cuda", dtype: torch.dtype = torch.bfloat16,
             cuda_graphs: bool = True, probe_frames: Optional[int] = None, frame_bucket: int = 32) -> SpeedSetup:
    """Move the model to `device`, the network to `dtype`, and compile it with CUDA graphs (eager fallback).

    `probe_frames` runs one guided step (forward and backward) at that length right away,
    so a failure in the compiled *backward* (which the forward wrapper cannot catch) also
    falls back to eager here instead of in the middle of a render.

    Compiled graphs are specialised to one shape, so window lengths are rounded up to a
    multiple of `frame_bucket` latent frames (the denoiser's `frame_multiple`, which the
    task code pads to): a daemon then compiles a handful of shapes, not one per request.
    """
    device = torch.device(device)
    net = network_of(model)
    for module in (model.denoiser, model.autoencoder):
        if isinstance(module, torch.nn.Module):
            module.to(device)
    net.to(dtype=dtype)
    setup = SpeedSetup(device=str(device), dtype=str(dtype).replace("torch.", ""))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    procs = getattr(net, "attn_processors", None)
    if isinstance(procs, dict):
        setup.attention = sorted({type(p).__name__ for p in procs.values()})
    if cuda_graphs:
        mode = "reduce-overhead" if device.type == "cuda" else "default"
        try:
            compiled = torch.compile(net.forward, mode=mode, dynamic=False)
        except Exception as exc:  # torch.compile itself unavailable
            setup.fallback_reason = f"{type(exc).__name__}: {exc}"[:300]
        else:
            eager = net.forward
            net.forward = EagerFallback(compiled, eager, setup)  # type: ignore[method-assign]
            setup.compiled = True
            if frame_bucket > 1:
                model.denoiser.frame_multiple = max(int(getattr(model.denoiser, "frame_multiple", 1)), frame_bucket)
            if probe_frames:
                try:
                    _probe(model, probe_frames, device)
                except Exception as exc:
                    net.forward = eager  # type: ignore[method-assign]
                    setup.compiled = False
                    model.denoiser.frame_multiple = 1
                    setup.fallback_reason = f"{type(exc).__name__}: {exc}"[:300]
                    log.warning("compiled guided step failed, running eager: %s", setup.fallback_reason)
    setup.frame_multiple = int(getattr(model.denoiser, "frame_multiple", 1))
    return setup


def _probe(model: Model, frames: int, device: torch.device) -> None:
    """One forward + input-gradient pass of the denoiser, as a guided sampling step does."""
    x = torch.randn(1, int(model.denoiser.channels), frames, device=device, requires_grad=True)
    x0 = model.denoiser(x, torch.full((1,), 1.0, device=device))
    (grad,) = torch.autograd.grad(x0.float().abs().sum(), x)
    if not torch.isfinite(grad).all():
        raise FloatingPointError("non-finite gradient through the compiled network")
