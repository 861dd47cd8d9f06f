"""The `builtin` model: a small spectral v-diffusion model shipped in engine/models/weights/.

Trained by `engine.training.train` on freely licensed game music from Debian (see
engine/models/weights/MODEL_CARD.md). It works in the space of `SpectralTransform`
(an exactly invertible compressed STFT, hop 512), so the engine's latent path
(encode -> guided sampling -> decode) applies unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..denoiser import VPredictionDenoiser
from .energy_cap import JensenCapped
from ..errors import ModelNotFound
from .base import Model, register_model
from .builtin_net import NetConfig, SpectralUNet
from .spectral import SpectralTransform

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_NAME = "builtin"
TRAIN_COMMAND = ("scripts/fetch_corpus.sh data && python -m engine.training.corpus --out data && "
                 "python -m engine.training.train --config cpu --out runs/cpu --export-to engine/models/weights")
# Measured with bench/quality.py (see BENCHMARKS.md); xi for the "fixed" step mode.
DEFAULT_GUIDANCE_SCALE = 3e-2
DEFAULT_STEPS = 32
# The retrieval prior does the musical work; the model refines it only when asked (BENCHMARKS.md,
# "Quality of the default engine").
DEFAULT_PRIOR = "similarity"
# The prior ships unrefined for every task: on the training split (bench/tune_infill.py), re-noising
# the seams at 0.1 cost infill and regenerate log-mel L1 (+0.0018 +- 0.0008 each, worse on 17 and 18
# of 24 windows) and helped neither seam (level jump +0.03 / +0.06 dB, within noise) nor
# regenerate's variation; refining a transition's crossfade cost 0.6 dB of level, and a
# continuation's jumps roughened its seams (flux 0.81 -> 0.87). `--refine-strength` still asks for it.
DEFAULT_REFINE_STRENGTH = 0.0
DEFAULT_REFINE_SPAN = "seams"


def load_builtin(weights_dir: Optional[Path | str] = None) -> Model:
    """Load the shipped weights (or those in `weights_dir`) as a `Model` on the CPU."""
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    weights = folder / f"{WEIGHTS_NAME}.safetensors"
    config = folder / f"{WEIGHTS_NAME}.json"
    for path in (weights, config):
        if not path.is_file():
            raise ModelNotFound(f"built-in model file {path} not found; reinstall segue, or train it with: "
                                f"{TRAIN_COMMAND}")
    from safetensors.torch import load_file

    meta = json.loads(config.read_text())
    tensors = load_file(str(weights))
    tcfg = meta["transform"]
    transform = SpectralTransform(n_fft=int(tcfg["n_fft"]), hop=int(tcfg["hop"]), power=float(tcfg["power"]),
                                  bin_scale=tensors.pop("transform.bin_scale"), sample_rate=int(meta["sample_rate"]))
    net = SpectralUNet(NetConfig.from_dict(meta["net"]))
    state = {k[len("net."):]: v.float() for k, v in tensors.items() if k.startswith("net.")}
    net.load_state_dict(state)
    net.eval().requires_grad_(False)
    denoiser = VPredictionDenoiser(net, sample_rate=transform.sample_rate, channels=transform.latent_channels,
                                   sigma_data=float(meta.get("sigma_data", 1.0)))
    return Model(name="builtin", denoiser=denoiser, autoencoder=transform,
                 default_guidance_scale=DEFAULT_GUIDANCE_SCALE, default_steps=DEFAULT_STEPS,
                 default_prior=DEFAULT_PRIOR, default_refine_strength=DEFAULT_REFINE_STRENGTH,
                 default_refine_span=DEFAULT_REFINE_SPAN, prior_fallback="crossfade",
                 refiner=lambda d: JensenCapped(d, bins=transform.bins),
                 info={"weights": str(weights), "training": meta.get("training", {}),
                       "parameters": sum(p.numel() for p in net.parameters())})


register_model("builtin", load_builtin)
