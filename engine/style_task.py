"""The style task: colour a region with DSP, then (optionally) refine it with the model, keeping the music.

Why this order. Guidance alone re-noised clips without moving their colour
(the model, not the preset, set the brightness) and took twice real time. So:

1. **Colour (deterministic DSP, does the bulk).** A style preset's effect chain
   (`engine.effects`, parameters scaled by `strength`), then, when the request
   has a reference clip (`--reference`) or the preset asks for it (`match_eq`),
   a fitted matching EQ toward the reference's spectral envelope, and a
   loudness match: to the input's LUFS after a chain (colour, not level), to the
   reference's after `--reference` (moved by `strength`).
   Then the **texture match** (`engine.style_texture`, `texture_iterations` > 0): an
   EQ curve and per-band dynamics (the music's own accents deepened or evened out),
   bounded, optimised toward the reference embedding while keeping the input's
   chroma and onsets (the guidance the model's sampler could not give without
   re-noising the music), applied by `strength`.
2. **Refine (the model, optional).** The coloured region is cut into
   overlapping windows; each is re-noised only to `refine_strength * strength`
   of the schedule and denoised with guidance toward the reference embedding
   (groups weighted by the preset's `[style] weights`; chroma off by default, so
   the harmony is not pulled into the reference's key), then overlap-added.
   `refine_strength` None takes `DEFAULT_REFINE_STRENGTH`, 0 skips the model.

Kept apart from engine/tasks.py so the style path can grow without touching
the retrieval-prior tasks.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .audio_io import load_audio
from .effects import DEFAULT_WEIGHTS, StyleChain, apply_chain, apply_eq_curve, integrated_lufs, match_loudness, \
    matching_eq_db
from .errors import InvalidRequest
from .schema import MIN_REGION_S
from .models.base import Model
from .progress import ProgressTracker
from .regions import crossfade, equal_power_curves
from .request import RenderRequest
from .schedule import truncate_sigmas
from .models.schedules import native_sigmas
from .style_texture import TextureSettings, texture_match, windows as texture_windows
from .tasks import StyleTarget, TaskOutput, generate_window, to_samples

# Measured with bench/style.py (BENCHMARKS.md, "Style presets"): with the built-in model,
# refinement at 0.1 cut onset correlation from 0.62-0.96 to 0.51-0.69, moved the embedding
# distance by -4..+9 points and cost 0.18-2.3 s per second of audio (the chain: 0.01-0.2), so
# the default is the chain alone; a request may still ask for refinement with `refine_strength`.
DEFAULT_REFINE_STRENGTH = 0.0
REFERENCE_TEXTURE_ITERATIONS = 60   # texture match steps for a --reference render without a preset (engine/plan.py)
REFINE_WINDOW_S = 6.0
REFINE_OVERLAP_S = 0.5
PRE_ROLL_S = 2.0        # audio before the region run through the chain, so filters and reverbs are warm


def style(model: Model, audios: Sequence[np.ndarray], request: RenderRequest, *, generator: torch.Generator,
          tracker: ProgressTracker, target: StyleTarget) -> TaskOutput:
    """Style [start, end) (default: all) of the first input; the audio outside the region is untouched."""
    audio = audios[0]
    rate = model.sample_rate
    start = 0 if request.start_s is None else to_samples(request.start_s, rate)
    end = audio.shape[1] if request.end_s is None else to_samples(request.end_s, rate)
    if end > audio.shape[1]:
        raise InvalidRequest(f"the region ends at {request.end_s:.3f} s but the audio lasts "
                             f"{audio.shape[1] / rate:.3f} s", code="region_out_of_range")
    if end - start < to_samples(MIN_REGION_S, rate):
        raise InvalidRequest(f"the region must be at least {MIN_REGION_S * 1000:.0f} ms long",
                             code="region_out_of_range")
    chain = preset_style(request)
    pre = max(0, start - to_samples(PRE_ROLL_S, rate))
    coloured = colour(audio[:, pre:end], rate, request, chain, target)[:, start - pre:]
    info: dict = {}
    if (request.texture_iterations or 0) > 0 and request.strength > 0.0 and target is not None:
        coloured, info["texture_match"] = texture_stage(coloured, audio[:, start:end], rate, request, chain, target,
                                                        tracker)
    losses: dict = {}
    refine_t = refine_level(request)
    if refine_t > 0.0:
        coloured, losses = refine(model, coloured, request, weighted_target(target, chain), refine_t,
                                  generator=generator, tracker=tracker)
    else:   # no sampler ran: report the chain's work as the whole job, so progress reaches 100 %
        tracker.advance(tracker.total - tracker.done)
    region = _blend_edges(audio, coloured, start, end, to_samples(request.seam_ms / 1000.0, rate))
    full = audio.copy()
    full[:, start:end] = region
    return TaskOutput(region=region, offset=start, full=full, losses=losses, info=info)


def texture_stage(coloured: np.ndarray, original: np.ndarray, rate: int, request: RenderRequest,
                  chain: Optional[StyleChain], target: StyleTarget, tracker: ProgressTracker) -> tuple[np.ndarray, dict]:
    """Step 1b: the texture match (`engine.style_texture`, back at the coloured level); its record for the sidecar.

    Runs for embedders that expose their power-spectrogram statistics (the built-in
    DSP embedder); for others it records why it did not run.
    """
    if not hasattr(target.embed, "features_from_power"):
        return coloured, {"skipped": "the embedder does not expose its spectrogram statistics"}
    settings = TextureSettings(iterations=int(request.texture_iterations))
    weights = dict(chain.weights) if chain is not None else dict(DEFAULT_WEIGHTS)
    n_iter = settings.iterations * len(texture_windows(coloured.shape[1], rate, settings))
    tracker.total = max(tracker.total, tracker.done + n_iter)
    stage, tracker.stage = tracker.stage, "texture"
    try:
        result = texture_match(coloured, original, rate, target.embed, target.reference, weights,
                               float(request.strength), settings, on_iteration=tracker.advance,
                               tone=chain.tone if chain is not None else "neutral")
    finally:
        tracker.stage = stage
    record = {"settings": settings.describe(), "strength": float(request.strength), "weights": weights,
              "distance_before": result.distance_before, "distance_after": result.distance_after,
              "fraction_applied": result.fraction_applied,
              "tone": chain.tone if chain is not None else "neutral", "windows": result.windows,
              "eq_db": [round(float(v), 2) for v in result.eq_db],           # per mel band, low to high
              "expansion": [round(float(v), 3) for v in result.expansion],
              "drift_db": result.drift_db,
              "seconds": result.seconds}
    return result.audio, record


def preset_style(request: RenderRequest) -> Optional[StyleChain]:
    """The style preset's chain and weights (None without a preset, or for a preset without them)."""
    if not request.preset:
        return None
    from .presets import load_preset

    return load_preset(request.preset).style


def refine_level(request: RenderRequest) -> float:
    """How far the model re-noises each window: `refine_strength` (or the default) times `strength`."""
    base = DEFAULT_REFINE_STRENGTH if request.refine_strength is None else request.refine_strength
    return float(base) * float(request.strength)


def colour(audio: np.ndarray, rate: int, request: RenderRequest, chain: Optional[StyleChain],
           target: Optional[StyleTarget]) -> np.ndarray:
    """Step 1: the chain, the matching EQ and the loudness match, all scaled by `strength`."""
    s = float(request.strength)
    out = np.ascontiguousarray(audio, dtype=np.float32)
    in_lufs = integrated_lufs(out, rate)
    if chain is not None and chain.effects:
        out = apply_chain(chain.effects, out, rate, s, keep_loudness=False)
    eq_amount = (chain.match_eq if chain is not None else 1.0 if request.reference is not None else 0.0) * s
    if eq_amount > 0.0 and target is not None:
        envelope = reference_envelope(target)
        if envelope is not None:
            centres, ref_logmel = envelope
            now = _log_mel_mean(target.embed, out)
            out = apply_eq_curve(out, rate, centres, matching_eq_db(now, ref_logmel), amount=eq_amount)
    goal = in_lufs
    if request.reference is not None and chain is None:
        ref_lufs = integrated_lufs(load_audio(request.reference, rate), rate)
        if np.isfinite(ref_lufs) and np.isfinite(in_lufs):
            goal = in_lufs + s * (ref_lufs - in_lufs)
    return match_loudness(out, rate, goal)


def reference_envelope(target: StyleTarget) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(mel band centres in Hz, the reference's mean log-mel power per band), recovered from its embedding.

    Works for embedders that expose their `mel_mean` group and normalisation
    (the built-in DSP embedder); others return None and get no matching EQ.
    """
    emb = target.embed
    slices, offset, scale = getattr(emb, "slices", None), getattr(emb, "offset", None), getattr(emb, "scale", None)
    if slices is None or offset is None or "mel_mean" not in slices:
        return None
    sl = slices["mel_mean"]
    ref = target.reference.detach().double().reshape(-1)[sl]
    raw = (ref * scale[sl].double() + offset[sl].double()).numpy()
    return _mel_centres(emb), raw


def _mel_centres(emb) -> np.ndarray:
    fb = emb.mel_fb.double().numpy()
    freqs = np.linspace(0, emb.sample_rate / 2, fb.shape[1])
    return (fb * freqs[None]).sum(axis=1) / np.maximum(fb.sum(axis=1), 1e-20)


def _log_mel_mean(embed, audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return embed.features(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None])["mel_mean"][0] \
            .double().numpy()


def weighted_target(target: StyleTarget, chain: Optional[StyleChain]) -> StyleTarget:
    """The target with each embedding group scaled by sqrt(weight), so L2 guidance weights the groups."""
    slices = getattr(target.embed, "slices", None)
    if slices is None:
        return target
    weights = dict(chain.weights) if chain is not None else dict(DEFAULT_WEIGHTS)
    w = torch.ones(target.reference.shape[-1], dtype=target.reference.dtype)
    for group, sl in slices.items():
        w[sl] = float(weights.get(group, 1.0)) ** 0.5
    embed = target.embed
    return StyleTarget(embed=lambda x: embed(x) * w.to(x.dtype), reference=target.reference * w)


def refine_windows(n: int, rate: int) -> list[tuple[int, int]]:
    """[start, stop) windows of about REFINE_WINDOW_S covering n samples, overlapping by REFINE_OVERLAP_S."""
    win, hop = to_samples(REFINE_WINDOW_S, rate), to_samples(REFINE_WINDOW_S - REFINE_OVERLAP_S, rate)
    if n <= win:
        return [(0, n)]
    starts = list(range(0, n - win, hop)) + [n - win]
    return [(s, s + win) for s in starts]


def refine(model: Model, audio: np.ndarray, request: RenderRequest, target: StyleTarget, level: float, *,
           generator: torch.Generator, tracker: ProgressTracker) -> tuple[np.ndarray, dict]:
    """Step 2: low-strength guided refinement of overlapping windows, overlap-added with equal-power fades."""
    rate = model.sample_rate
    windows = refine_windows(audio.shape[1], rate)
    per_window = len(truncate_sigmas(native_sigmas(model, request.steps), min(level, 1.0))) - 1
    tracker.total = max(tracker.total, len(windows) * per_window)   # more passes than the plan counted
    req = request.replace(style_weight=request.style_weight * float(request.strength), data_consistency=False)
    out = audio.copy()
    losses: dict = {}
    kept = 0
    prev_stop = 0
    for a, b in windows:
        gen, losses = generate_window(model, audio[:, a:b], np.zeros(b - a, dtype=bool), req, generator=generator,
                                      tracker=tracker, style=target, strength=min(level, 1.0))
        if _collapsed(gen, audio[:, a:b]):   # the model diverged (NaN, zeroed) or lost the signal: keep the chain's
            gen = audio[:, a:b]
            kept += 1
        overlap = max(0, prev_stop - a)
        if overlap:
            out[:, a:a + overlap] = crossfade(out[:, a:a + overlap], gen[:, :overlap])
        out[:, a + overlap:b] = gen[:, overlap:]
        prev_stop = b
    losses = dict(losses)
    losses["refine_windows"] = len(windows)
    losses["refine_windows_kept_from_chain"] = kept
    return out.astype(np.float32), losses


def _collapsed(generated: np.ndarray, source: np.ndarray) -> bool:
    """True when a refined window lost nearly all of its source's energy (under -40 dB of it)."""
    src = float(np.sqrt(np.mean(np.square(source, dtype=np.float64))))
    gen = float(np.sqrt(np.mean(np.square(generated, dtype=np.float64))))
    return src > 1e-4 and not gen > 0.01 * src


def _blend_edges(audio: np.ndarray, styled: np.ndarray, start: int, end: int, seam: int) -> np.ndarray:
    """Fade from the original into the styled region (and back) at edges inside the clip only."""
    region = styled.copy()
    seam = min(seam, (end - start) // 2)
    if seam <= 0:
        return region
    fo, fi = equal_power_curves(seam)
    if start > 0:
        region[:, :seam] = audio[:, start:start + seam] * fo + region[:, :seam] * fi
    if end < audio.shape[1]:
        region[:, -seam:] = region[:, -seam:] * fo + audio[:, end - seam:end] * fi
    return region
