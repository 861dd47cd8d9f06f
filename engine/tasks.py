"""The five tasks as guided generation over windows: infill, regenerate, continue, transition, style.

Each task turns a request and its audio into one call (or a chain of calls, for
long continuations) of `generate_window`, which runs the sampler with the
task's losses and start sample, and then places the result on the timeline.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .errors import InvalidRequest
from .guidance import EMBED_LOSSES, RECON_LOSSES, Guidance, LossTerm
from .models.base import Model
from .progress import ProgressTracker
from .regions import (Window, as_tensor, crossfade, frame_mask, frame_support, plan_window, splice,
                      transition_fade_curves)
from .request import RenderRequest
from .schema import MIN_REGION_S, REGION_OUT_OF_RANGE
from .prior.edits import (_spliced, continuation_prior, crossfade_fill, infill_prior, loop_fill, make_sources,
                          seam_mask, transition_prior)
from .samplers import DataConsistency, get_sampler, randn_like
from .models.schedules import native_sigmas
from .schedule import get_sigmas_cosine, truncate_sigmas

CONTINUE_CHUNK_S = 3.6      # generated per continuation pass (the method's 2.4 s -> 6 s)
MIN_GAP_S = MIN_REGION_S   # the one minimum region length (engine/schema.py)


@dataclass
class TaskOutput:
    """The rendered clip and where it sits: `offset` samples into the first input's timeline.

    `full` is the whole edited timeline (input with the clip in place).
    """

    region: np.ndarray
    offset: int
    full: np.ndarray
    losses: dict
    info: dict = field(default_factory=dict)   # the prior's choices (source spans, tempo, fallback)


@dataclass(frozen=True)
class StyleTarget:
    """An embedder and the embedding to move toward."""

    embed: Callable[[torch.Tensor], torch.Tensor]
    reference: torch.Tensor


def to_samples(s: float, rate: int) -> int:
    """Seconds -> the nearest sample index at `rate`."""
    return int(round(s * rate))


def generate_window(model: Model, audio: np.ndarray, known: np.ndarray, request: RenderRequest, *,
                    generator: torch.Generator, tracker: ProgressTracker, x_bar: Optional[np.ndarray] = None,
                    style: Optional[StyleTarget] = None, style_span: Optional[tuple[int, int]] = None,
                    strength: float = 1.0) -> tuple[np.ndarray, dict]:
    """Generate the unknown samples of a window (2, L), guided by its known samples and/or a style.

    `x_bar` (same shape) makes the start k z + (1 - k) x_bar on the gap (regenerate,
    transition); `strength` < 1 starts from the noised input instead (audio-to-audio).
    A refiner (`model.refiner`, strength < 1, no style) sees the window at a standard
    loudness, so a quiet or hot clip gets the same signal-to-noise ratio at a given
    strength as the music the model was trained on; the result is scaled back.
    """
    gain = 1.0
    if strength < 1.0 and model.refiner is not None and style is None:
        gain = refine_gain(audio)
        audio = audio * gain
    wav, losses = _generate_window(model, audio, known, request, generator=generator, tracker=tracker, x_bar=x_bar,
                                   style=style, style_span=style_span, strength=strength)
    return (wav / gain if gain != 1.0 else wav), losses


REFINE_LEVEL_DBFS = -18.0     # the loudness the refiner sees (about the training corpus's)
REFINE_GAIN_LIMIT_DB = 30.0


def refine_gain(audio: np.ndarray) -> float:
    """The gain that brings a window to REFINE_LEVEL_DBFS (within +-30 dB; 1 for silence)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms < 1e-6:
        return 1.0
    db = float(np.clip(REFINE_LEVEL_DBFS - 20 * np.log10(rms), -REFINE_GAIN_LIMIT_DB, REFINE_GAIN_LIMIT_DB))
    return 10 ** (db / 20)


def _generate_window(model: Model, audio: np.ndarray, known: np.ndarray, request: RenderRequest, *,
                     generator: torch.Generator, tracker: ProgressTracker, x_bar: Optional[np.ndarray] = None,
                     style: Optional[StyleTarget] = None, style_span: Optional[tuple[int, int]] = None,
                     strength: float = 1.0) -> tuple[np.ndarray, dict]:
    length = audio.shape[1]
    padded = _padded_length(model, length)
    pad = padded - length
    audio_p = np.pad(audio, ((0, 0), (0, pad)))
    known_p = np.concatenate([known, np.zeros(pad, dtype=bool)])
    device = next(_params(model.denoiser), torch.empty(0)).device

    with torch.no_grad():
        y = model.encode(as_tensor(audio_p).to(device))
    if model.autoencoder is None:
        m = torch.from_numpy(known_p)
    else:
        offset, span = frame_support(model.autoencoder)
        m = torch.from_numpy(frame_mask(known_p, y.shape[-1], model.hop, offset, span))
    mask = m.to(device=device, dtype=y.dtype).reshape(1, 1, -1)
    any_known = bool(m.any())

    sigmas = native_sigmas(model, request.steps)
    if strength < 1.0:
        sigmas = truncate_sigmas(sigmas, strength)
    sigma0 = float(sigmas[0])
    z = randn_like(y, generator)
    if strength < 1.0:
        x = y + sigma0 * z
    else:
        x = y * mask + sigma0 * z
        if x_bar is not None:
            with torch.no_grad():
                xb = model.encode(as_tensor(np.pad(x_bar, ((0, 0), (0, pad)))).to(device))
            a_t = 1.0 / (1.0 + sigma0 ** 2) ** 0.5
            k = request.mix_k
            mixed = (k * z + (1 - k) * xb) / a_t   # VP x_T = k z + (1 - k) x_bar, seen in the VE view
            x = torch.where(mask.bool().expand_as(x), x, mixed)

    terms: list[LossTerm] = []
    if any_known and request.recon_weight > 0:
        terms.append(_recon_term(model, request, y, mask, audio_p, known_p, device))
    if style is not None and request.style_weight > 0:
        lo, hi = style_span if style_span is not None else (0, length)
        decode = (lambda x0: model.decode(x0, padded)[..., lo:hi])
        terms.append(LossTerm(f"style_{request.style_loss}",
                              EMBED_LOSSES[request.style_loss](style.embed, style.reference, decode),
                              request.style_weight, *request.style_t_range))
    step_mode = request.step_mode or model.default_step_mode
    scale = request.guidance_scale if request.guidance_scale is not None else model.default_scale(step_mode)
    guide = Guidance(terms, scale=scale, step_mode=step_mode) if terms else None
    consistency = DataConsistency(known=y, mask=mask) if (request.data_consistency and any_known) else None

    sampler = get_sampler(request.sampler)
    extra = model.info.get("sampler_kwargs", {}) if request.sampler == "dpmpp_2m_sde" else {}
    cond = text_conditioning(model, request, padded / model.sample_rate)
    denoiser = model.refiner(model.denoiser) if (strength < 1.0 and model.refiner is not None) else model.denoiser
    out = sampler(denoiser, x, sigmas.to(torch.float64), guide=guide, consistency=consistency, cond=cond,
                  callback=tracker.step_callback(), cancel=tracker.cancel, generator=generator, **extra)
    with torch.no_grad():
        wav = model.decode(out, padded)[0, :, :length].float().cpu().numpy()
    losses = dict(guide.last_losses) if guide is not None else {}
    return np.nan_to_num(wav, nan=0.0, posinf=0.0, neginf=0.0), losses


def text_conditioning(model: Model, request: RenderRequest, duration_s: float) -> Optional[object]:
    """The model's conditioning for the request's prompt (None for models without any)."""
    make = getattr(model.denoiser, "conditioning", None)
    if make is None:
        if request.prompt:
            raise InvalidRequest(f"model {model.name!r} takes no text prompt", code="unsupported")
        return None
    return make(request.prompt, duration_s=duration_s, cfg_scale=request.cfg_scale)


def _recon_term(model: Model, request: RenderRequest, y: torch.Tensor, mask: torch.Tensor,
                audio_p: np.ndarray, known_p: np.ndarray, device: torch.device) -> LossTerm:
    """Reconstruction of the context: in latent space (fast) or through the decoder (exact)."""
    in_audio = request.recon_space == "audio" or request.recon_loss == "mrstft" or model.autoencoder is None
    if in_audio:
        target = as_tensor(audio_p).to(device)
        smask = torch.from_numpy(known_p).to(device=device, dtype=target.dtype).reshape(1, 1, -1)
        op = None if model.autoencoder is None else (lambda x0: model.decode(x0, audio_p.shape[1]))
        fn = RECON_LOSSES[request.recon_loss](target, smask, op)
    else:
        fn = RECON_LOSSES[request.recon_loss](y, mask)
    lo, hi = request.recon_t_range
    return LossTerm(f"recon_{request.recon_loss}", fn, request.recon_weight, lo, hi)


def _padded_length(model: Model, length: int) -> int:
    """Smallest length >= `length` whose latent frame count suits the denoiser."""
    mult = model.frame_multiple
    if mult <= 1 and model.autoencoder is None:
        return length
    step = model.hop
    n = -(-length // step) * step
    for _ in range(mult * 4 + 4):
        if model.latent_frames(n) % mult == 0:
            return n
        n += step
    raise RuntimeError(f"no padding of {length} samples gives a frame count divisible by {mult}")


def _params(module: object):
    return module.parameters() if isinstance(module, torch.nn.Module) else iter(())


# ---- the tasks ---------------------------------------------------------------------------

def _region_bounds(request: RenderRequest, total: int, rate: int) -> tuple[int, int]:
    start, end = to_samples(request.start_s, rate), to_samples(request.end_s, rate)
    duration = total / rate
    if end > total:
        raise InvalidRequest(f"the region ends at {request.end_s:.3f} s but the audio lasts {duration:.3f} s",
                             code="region_out_of_range")
    if end - start < to_samples(MIN_GAP_S, rate):
        raise InvalidRequest(f"the region must be at least {MIN_GAP_S * 1000:.0f} ms long", code=REGION_OUT_OF_RANGE)
    return start, end


def infill(model: Model, audios: Sequence[np.ndarray], request: RenderRequest, *, generator: torch.Generator,
           tracker: ProgressTracker, regenerate: bool = False) -> TaskOutput:
    """Fill [start, end) from the context around it (regenerate: start from 0.85 noise + 0.15 original).

    With the similarity prior, x_bar is the best-fitting span of the user's audio (for
    regenerate, a ranked alternative chosen by seed), and the model refines it.
    """
    audio = audios[0]
    rate = model.sample_rate
    start, end = _region_bounds(request, audio.shape[1], rate)
    seam = to_samples(request.seam_ms / 1000.0, rate)
    fallback = None
    if resolve_prior(model, request) == "similarity" and not request.native_inpaint:
        sources = _prior_sources(model, audios[0], request)
        rank = request.candidate + (request.seed if regenerate else 0)
        timeline, info = infill_prior(sources, start, end, context_s=PRIOR_CONTEXT_S, seam=seam, candidate=rank)
        if timeline is not None:
            return _refine(model, audio, timeline, start, end, [start, end], request, generator, tracker, info)
        if model.prior_fallback == "crossfade":
            tracker.advance(tracker.total)
            region = crossfade_fill(audio, start, end)
            full = audio.copy()
            full[:, start:end] = region
            return TaskOutput(region=region, offset=start, full=full, losses={}, info=_fell_back(info, "crossfade"))
        fallback = _fell_back(info)
        request = request.replace(prior="none")
    win = plan_window(audio.shape[1], start, end, to_samples(request.context_s, rate))
    window_audio = audio[:, win.start:win.stop]
    if request.native_inpaint:
        gen, losses = _native_inpaint(model, window_audio, win, request, tracker), {}
    else:
        gen, losses = generate_window(model, window_audio, win.known_mask(), request, generator=generator,
                                      tracker=tracker, x_bar=window_audio if regenerate else None)
    out = _place(audio, gen, win, seam, losses)
    if fallback is not None:
        out.info = fallback
    return out


PRIOR_CONTEXT_S = 2.0        # seconds of surroundings each side that candidates are judged by
LOOP_FALLBACK_S = 2.0        # a continuation with nothing to copy loops the clip's last seconds
SEAM_REFINE_S = 0.25         # half-width of the zone the model regenerates around each seam ("seams" span)


def resolve_prior(model: Model, request: RenderRequest) -> str:
    """The request's prior; engine/plan.py has already put the model's default there ("none" if unset)."""
    return request.prior or "none"


def resolve_refinement(model: Model, request: RenderRequest) -> tuple[float, str]:
    """(strength, span) of the model's pass over the prior, as engine/plan.py resolved them."""
    strength = request.refine_strength
    return float(0.0 if strength is None else strength), request.refine_span or "seams"


def _fell_back(info, to: str = "generative") -> dict:
    """The sidecar's record of a prior that found nothing: the reason, and what was done instead."""
    out = info.to_json()
    out["fallback_to"] = to
    return out


def _prior_sources(model: Model, audio: np.ndarray, request: RenderRequest) -> list:
    """The edited input and every extra source the request names, each analysed whole."""
    from .audio_io import load_audio

    names = [_source_name(request.audio[0])]
    audios = [audio]
    for path in request.sources:
        names.append(_source_name(path))
        audios.append(load_audio(path, model.sample_rate))
    return make_sources(names, audios, model.sample_rate, bpm=request.bpm, beat_offset_s=request.beat_offset_s)


def _source_name(a: object) -> str:
    return a if isinstance(a, str) else "pcm"


def _refine(model: Model, original: np.ndarray, timeline: np.ndarray, start: int, end: int, seams: list[int],
            request: RenderRequest, generator: torch.Generator, tracker: ProgressTracker, info,
            known_outside: bool = True) -> TaskOutput:
    """Regenerate the prior with the model (the method's regeneration from x_bar), then place [start, end).

    strength 0 keeps the prior as it is. The "seams" span re-noises only the zones
    around the seams (the copied interior is held as known, like the context); "gap"
    re-noises the whole region from k z + (1 - k) x_bar at the given strength.
    """
    rate = model.sample_rate
    strength, span = resolve_refinement(model, request)
    seam = to_samples(request.seam_ms / 1000.0, rate)
    info.extra.update({"refine_strength": strength, "refine_span": span})
    if strength <= 0.0:
        tracker.advance(tracker.total)
        gen_region = timeline[:, start:end]
        losses: dict = {}
    else:
        win = plan_window(timeline.shape[1], start, end, to_samples(request.context_s, rate))
        window_audio = timeline[:, win.start:win.stop]
        known = win.known_mask() if known_outside else np.zeros(win.length, bool)
        if span == "seams":
            half = to_samples(SEAM_REFINE_S, rate)
            known = known | seam_mask(win.length, [p - win.start for p in seams], half)
        gen, losses = generate_window(model, window_audio, known, request, generator=generator, tracker=tracker,
                                      strength=strength)
        gen_region = gen[:, start - win.start:end - win.start]
    region = _spliced(original, gen_region, start, end, seam) if known_outside else gen_region
    full = timeline.copy()
    full[:, start:end] = region
    return TaskOutput(region=region, offset=start, full=full, losses=losses, info=info.to_json())


def _native_inpaint(model: Model, window_audio: np.ndarray, win: Window, request: RenderRequest,
                    tracker: ProgressTracker) -> np.ndarray:
    """The comparison mode: a model's own trained inpainting path, no guidance."""
    if not hasattr(model.denoiser, "inpaint_cond"):
        raise InvalidRequest(f"model {model.name!r} has no trained inpainting path; use guided infill",
                             code="unsupported")
    from .models.stable_audio3 import native_infill

    gap = (win.gap_start - win.start, win.gap_stop - win.start)
    out = native_infill(model, window_audio, gap, steps=request.steps, seed=request.seed)
    tracker.advance(request.steps)
    return out


def _place(audio: np.ndarray, gen: np.ndarray, win: Window, seam: int, losses: dict) -> TaskOutput:
    """Splice the window's generated gap into the timeline `audio`."""
    original = audio[:, win.start:win.stop]
    region = splice(original, gen, win.gap_start - win.start, win.gap_stop - win.start, seam)
    full = audio.copy()
    full[:, win.gap_start:win.gap_stop] = region
    return TaskOutput(region=region, offset=win.gap_start, full=full, losses=losses)


def continue_clip(model: Model, audios: Sequence[np.ndarray], request: RenderRequest, *,
                  generator: torch.Generator, tracker: ProgressTracker) -> TaskOutput:
    """Continue from the cut point for `duration_s`.

    With the similarity prior: jump-back continuation through the clip's own past (and
    the request's sources), refined around each jump. Without it: chunk by chunk, each
    generated and conditioned on what came before.
    """
    audio = audios[0]
    rate = model.sample_rate
    cut = audio.shape[1] if request.start_s is None else to_samples(request.start_s, rate)
    if cut > audio.shape[1]:
        raise InvalidRequest(f"the cut point {request.start_s:.3f} s lies after the end of the audio "
                             f"({audio.shape[1] / rate:.3f} s)", code="region_out_of_range")
    if cut < to_samples(0.25, rate):
        raise InvalidRequest("continuation needs at least 0.25 s of audio before the cut point",
                             code=REGION_OUT_OF_RANGE)
    todo = to_samples(request.duration_s, rate)
    seam = to_samples(request.seam_ms / 1000.0, rate)
    fallback = None
    if resolve_prior(model, request) == "similarity":
        sources = _prior_sources(model, audio[:, :cut], request)
        stream, info = continuation_prior(sources, cut, todo, context_s=PRIOR_CONTEXT_S, seam=seam,
                                          candidate=request.candidate)
        if stream is not None:
            seams = [cut + to_samples(seg["at_s"], rate) - cut for seg in info.segments]
            stream = _refine_seams(model, stream, seams, cut, request, generator, tracker, info)
            return TaskOutput(region=stream[:, cut:], offset=cut, full=stream, losses={}, info=info.to_json())
        if model.prior_fallback == "crossfade":
            tracker.advance(tracker.total)
            stream = loop_fill(audio[:, :cut], todo, seam, to_samples(LOOP_FALLBACK_S, rate))
            return TaskOutput(region=stream[:, cut:], offset=cut, full=stream, losses={},
                              info=_fell_back(info, "crossfade"))
        fallback = _fell_back(info)
        request = request.replace(prior="none")
    context = min(to_samples(request.context_s, rate), cut)
    chunk = to_samples(CONTINUE_CHUNK_S, rate)
    stream = audio[:, :cut]
    losses: dict = {}
    while todo > 0:
        n = min(chunk, todo)
        ctx = stream[:, -context:]
        window_audio = np.concatenate([ctx, np.zeros((2, n), np.float32)], axis=1)
        known = np.concatenate([np.ones(ctx.shape[1], bool), np.zeros(n, bool)])
        gen, losses = generate_window(model, window_audio, known, request, generator=generator, tracker=tracker)
        stream = _join(stream, gen, ctx.shape[1], seam)
        todo -= n
    continuation = stream[:, cut:]
    return TaskOutput(region=continuation, offset=cut, full=stream, losses=losses, info=fallback or {})


def _refine_seams(model: Model, stream: np.ndarray, seams: list[int], frozen_before: int, request: RenderRequest,
                  generator: torch.Generator, tracker: ProgressTracker, info) -> np.ndarray:
    """Regenerate a short zone around each seam of a long prior, one small window per seam.

    Everything before `frozen_before` (the user's clip) stays exactly as it was.
    """
    rate = model.sample_rate
    strength, span = resolve_refinement(model, request)
    info.extra.update({"refine_strength": strength, "refine_span": "seams"})
    if strength <= 0.0 or not seams:
        tracker.advance(tracker.total)
        return stream
    half = to_samples(SEAM_REFINE_S, rate)
    ctx = to_samples(min(request.context_s, 1.0), rate)
    out = stream.copy()
    for p in seams:
        lo, hi = max(frozen_before, p - half), min(out.shape[1], p + half)
        if hi - lo < to_samples(MIN_GAP_S, rate):
            continue
        w0, w1 = max(0, lo - ctx), min(out.shape[1], hi + ctx)
        window_audio = out[:, w0:w1]
        known = np.ones(w1 - w0, bool)
        known[lo - w0:hi - w0] = False
        gen, _ = generate_window(model, window_audio, known, request, generator=generator, tracker=tracker,
                                 strength=strength)
        edge = min(to_samples(request.seam_ms / 1000.0, rate), (hi - lo) // 2)
        out[:, lo:hi] = splice(window_audio, gen, lo - w0, hi - w0, edge)
    return out


def _join(stream: np.ndarray, gen: np.ndarray, context: int, seam: int) -> np.ndarray:
    """Append the new part of `gen` (after its `context` samples), crossfading the last `seam` of the stream."""
    seam = min(seam, context)
    out = np.concatenate([stream, gen[:, context:]], axis=1)
    if seam > 0:
        a = stream[:, -seam:]
        b = gen[:, context - seam:context]
        out[:, stream.shape[1] - seam:stream.shape[1]] = crossfade(a, b)
    return out


def transition_mix(a: np.ndarray, b: np.ndarray, join_a: int, join_b: int, xf: int, *,
                   curves: Callable[[int], tuple[np.ndarray, np.ndarray]] = transition_fade_curves,
                   ) -> tuple[np.ndarray, int, int]:
    """The timeline A[:join_a] ++ B[join_b:] with a constant-power crossfade of `xf` samples centred on the join.

    Material A has after join_a (and B before join_b) feeds the crossfade; where
    there is none, that side contributes silence. `curves` shapes the fade (default:
    equal power with smooth ends). Returns (mix, gap_start, gap_stop).
    """
    total = join_a + (b.shape[1] - join_b)
    mix = np.zeros((2, total), np.float32)
    mix[:, :join_a] = a[:, :join_a]
    mix[:, join_a:] = b[:, join_b:]
    g0, g1 = max(0, join_a - xf // 2), min(total, join_a + (xf - xf // 2))
    idx = np.arange(g0, g1)
    a_part = np.zeros((2, len(idx)), np.float32)
    ok = idx < a.shape[1]
    a_part[:, ok] = a[:, idx[ok]]
    b_idx = idx - join_a + join_b
    b_part = np.zeros((2, len(idx)), np.float32)
    okb = (b_idx >= 0) & (b_idx < b.shape[1])
    b_part[:, okb] = b[:, b_idx[okb]]
    fo, fi = curves(len(idx))
    mix[:, g0:g1] = a_part * fo + b_part * fi
    return mix, g0, g1


def transition(model: Model, audios: Sequence[np.ndarray], request: RenderRequest, *,
               generator: torch.Generator, tracker: ProgressTracker) -> TaskOutput:
    """Regenerate a crossfade between clip A (left) and clip B (right), with both as context."""
    a, b = audios
    rate = model.sample_rate
    join_a = a.shape[1] if request.start_s is None else to_samples(request.start_s, rate)
    join_b = to_samples(request.b_start_s, rate)
    if join_a > a.shape[1]:
        raise InvalidRequest(f"the join point in clip A ({request.start_s:.3f} s) lies after its end "
                             f"({a.shape[1] / rate:.3f} s)", code="region_out_of_range")
    if join_b >= b.shape[1]:
        raise InvalidRequest(f"the join point in clip B ({request.b_start_s:.3f} s) is not before its end "
                             f"({b.shape[1] / rate:.3f} s)", code="region_out_of_range")
    xf = to_samples(request.crossfade_s, rate)
    if join_a < xf // 2 or b.shape[1] - join_b < xf - xf // 2:
        raise InvalidRequest(f"both clips need at least half the crossfade ({request.crossfade_s / 2:.2f} s) "
                             "on their side of the join", code="region_out_of_range")
    if resolve_prior(model, request) == "similarity":
        src_a = make_sources([_source_name(request.audio[0])], [a], rate, bpm=request.bpm,
                             beat_offset_s=request.beat_offset_s)[0]
        daw_grid = request.bpm is not None or request.beat_offset_s is not None   # A's grid, named by the DAW
        b2, _, ja, jb, info = transition_prior(src_a, b, _source_name(request.audio[1]), join_a, join_b, xf,
                                               search_s=request.join_search_s, follow_stronger_pulse=not daw_grid,
                                               b_bpm=request.b_bpm, on_stage=tracker.note, poll=tracker.check)
        mix, g0, g1 = transition_mix(a, b2, ja, jb, xf)
        info.extra.update({"join_a_s": round(ja / rate, 6), "join_b_s": round(jb / rate, 6)})
        return _refine(model, mix, mix, g0, g1, [g0, g1], request.replace(refine_span="gap"), generator, tracker,
                       info)
    mix, g0, g1 = transition_mix(a, b, join_a, join_b, xf)
    win = plan_window(mix.shape[1], g0, g1, to_samples(request.context_s, rate))
    window_audio = mix[:, win.start:win.stop]
    gen, losses = generate_window(model, window_audio, win.known_mask(), request, generator=generator,
                                  tracker=tracker, x_bar=window_audio)
    return _place(mix, gen, win, to_samples(request.seam_ms / 1000.0, rate), losses)


def sampling_passes(request: RenderRequest) -> int:
    """How many sampler passes a request takes (for progress totals)."""
    if request.task == "continue":
        return max(1, int(np.ceil(request.duration_s / CONTINUE_CHUNK_S - 1e-9)))
    return 1


def steps_per_pass(request: RenderRequest) -> int:
    if request.task == "style" and request.strength < 1.0:
        return len(truncate_sigmas(get_sigmas_cosine(request.steps), request.strength)) - 1
    return request.steps
