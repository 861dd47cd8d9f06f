"""One code path from a validated `RenderRequest` to a rendered clip on disk.

Every front end (CLI, daemon, benchmarks) calls `render` (or `render_audio` for
in-memory results). Models are loaded once per process and cached.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import __version__
from .audio_io import check_output, check_readable, load_audio, sidecar_path, write_audio_atomic
from .errors import InvalidRequest, ModelNotFound
from .models import Model, load_model
from .plan import RenderPlan, plan_render
from .progress import CancelToken, ProgressCallback, ProgressEvent, ProgressTracker
from .render_identity import IDENTITY_KEY, KEPT_WARNING, identity_of, verified_sidecar
from .request import PCMAudio, RenderRequest
from .style_task import style
from .tasks import StyleTarget, TaskOutput, continue_clip, infill, sampling_passes, steps_per_pass, transition

_MODELS: dict[str, Model] = {}
_MODELS_LOCK = threading.Lock()


def get_model(name: str) -> Model:
    """Load a model once per process (thread-safe) and keep it for later requests."""
    with _MODELS_LOCK:
        if name not in _MODELS:
            _MODELS[name] = load_model(name)
        return _MODELS[name]


@dataclass
class RenderedAudio:
    """A render in memory: the clip (2, n) at `sample_rate`, `offset_s` into the first input."""

    audio: np.ndarray
    sample_rate: int
    offset_s: float
    losses: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    plan: Optional[RenderPlan] = None
    request: Optional[RenderRequest] = None    # the request as run: every model default resolved by `plan`
    info: dict = field(default_factory=dict)   # the prior's choices (TaskOutput.info)

    @property
    def duration_s(self) -> float:
        return self.audio.shape[1] / self.sample_rate


@dataclass(frozen=True)
class RenderResult:
    """Where a render landed and what it covers."""

    path: str
    sidecar_path: str
    offset_s: float
    duration_s: float
    sample_rate: int
    seed: int
    model: str
    warnings: tuple[str, ...] = ()


def render_audio(request: RenderRequest, *, model: Optional[Model] = None,
                 progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> RenderedAudio:
    """Run a request and return the clip (`span` decides: the region alone, or the whole edited timeline)."""
    t0 = time.monotonic()
    model = model if model is not None else get_model(request.model)
    plan = plan_render(request, model)
    request = plan.apply(request)
    rate = model.sample_rate
    audios = [load_audio(a, rate, downmix=request.downmix) for a in request.audio]
    tracker = ProgressTracker(sampling_passes(request) * steps_per_pass(request), progress, cancel)
    if cancel is not None:
        cancel.raise_if_cancelled()
    generator = torch.Generator().manual_seed(request.seed)
    out = _run_task(model, audios, request, generator, tracker)
    if tracker.done < tracker.total:   # a task that needed fewer steps than planned (a refined prior) still ends at 100 %
        tracker.advance(tracker.total - tracker.done)
    if request.span == "region":
        audio, offset = out.region, out.offset
    else:
        audio, offset = out.full, 0
    return RenderedAudio(np.ascontiguousarray(audio, dtype=np.float32), rate, offset / rate, out.losses,
                         time.monotonic() - t0, plan=plan, request=request, info=dict(getattr(out, "info", {}) or {}))


def _run_task(model: Model, audios: list[np.ndarray], request: RenderRequest, generator: torch.Generator,
              tracker: ProgressTracker) -> TaskOutput:
    kw = dict(generator=generator, tracker=tracker)
    if request.task == "infill":
        return infill(model, audios, request, **kw)
    if request.task == "regenerate":
        return infill(model, audios, request, regenerate=True, **kw)
    if request.task == "continue":
        return continue_clip(model, audios, request, **kw)
    if request.task == "transition":
        return transition(model, audios, request, **kw)
    return style(model, audios, request, target=style_target(request, model.sample_rate), **kw)


def style_target(request: RenderRequest, sample_rate: int, embedder_name: str = "dsp") -> StyleTarget:
    """The embedder and the embedding to steer toward (from a reference clip or a stored vector)."""
    from .embedders import load_embedder  # embedders are only needed for style

    embed = load_embedder(embedder_name)
    if embed.sample_rate != sample_rate:
        raise ModelNotFound(f"embedder {embedder_name!r} runs at {embed.sample_rate} Hz, the model at {sample_rate} Hz")
    if request.reference_embedding is not None:
        if request.preset:
            from .presets import check_reference, load_preset
            check_reference(load_preset(request.preset), embed)   # stored vector made by this embedder version?
        ref = torch.tensor(request.reference_embedding, dtype=torch.float32)[None]
        if ref.shape[1] != embed.dim:
            raise InvalidRequest(f"reference_embedding has {ref.shape[1]} values; the {embedder_name!r} embedder "
                                 f"gives {embed.dim}", code="bad_preset")
    else:
        ref_audio = torch.from_numpy(load_audio(request.reference, sample_rate, downmix=request.downmix))[None]
        with torch.no_grad():
            ref = embed(ref_audio).float()
    return StyleTarget(embed=embed, reference=ref)


def default_output_path(request: RenderRequest, output_dir: Path) -> Path:
    """A name that is unique per request content, readable, and never overwrites an input.

    The hash covers the PCM samples themselves (`to_json` only summarises PCM by its shape), so
    two jobs whose audio differs never share a name."""
    h = hashlib.sha1(json.dumps(request.to_json(), sort_keys=True, default=str).encode())
    for pcm in (*request.audio, request.reference):
        if isinstance(pcm, PCMAudio):
            h.update(np.ascontiguousarray(pcm.samples).tobytes())
    digest = h.hexdigest()[:10]
    first = request.audio[0]
    stem = Path(first).stem if isinstance(first, str) else "pcm"
    return output_dir / f"{stem}.{request.task}.{digest}.wav"


def render(request: RenderRequest, *, model: Optional[Model] = None, progress: Optional[ProgressCallback] = None,
           cancel: Optional[CancelToken] = None, output_dir: Optional[str | Path] = None) -> RenderResult:
    """Render and write the WAV (atomically) plus its JSON sidecar; nothing is written on failure."""
    for source in (*request.audio, *([request.reference] if request.reference is not None else [])):
        check_readable(source)
    if request.output is not None:
        path = Path(request.output)
    else:
        path = default_output_path(request, Path(output_dir) if output_dir is not None else Path.cwd())
    if path.suffix.lower() != ".wav":
        raise InvalidRequest(f"output must end in .wav, got {path.name}")
    inputs = {Path(a).resolve() for a in request.audio if isinstance(a, str)}
    if path.resolve() in inputs:
        raise InvalidRequest(f"the output {path} would overwrite an input", code="output_is_input")
    # an explicit output never replaces a file unless asked; a default name is the request's own content hash
    replace = request.overwrite or request.output is None
    identity = identity_of(request)   # hashed before rendering: the inputs as this render read them
    if not replace:   # the same render already on disk (a job re-run after a crash, a repeated command): keep it
        kept = adopted(request, identity)
        if kept is not None:
            return kept
    if path.parent.is_dir():
        os.close(check_output(path, replace=replace))  # refuse before rendering, not after
    model = model if model is not None else get_model(request.model)
    rendered = render_audio(request, model=model, progress=progress, cancel=cancel)
    if cancel is not None:
        cancel.raise_if_cancelled()
    warnings = _clipping_warnings(rendered.audio, request.bit_depth) + _prior_warnings(rendered.info)
    sidecar = {
        "segue_version": __version__,
        IDENTITY_KEY: identity,
        "request": rendered.request.to_json(),
        "plan": rendered.plan.to_json(),
        "prior": rendered.info,
        "model": {"name": model.name, **{k: v for k, v in model.info.items() if _plain(v)}},
        "seed": request.seed,
        "sample_rate": rendered.sample_rate,
        "offset_s": rendered.offset_s,
        "duration_s": rendered.duration_s,
        "final_losses": rendered.losses,
        "warnings": list(warnings),
        "elapsed_s": round(rendered.elapsed_s, 3),
    }
    write_audio_atomic(path, rendered.audio, rendered.sample_rate, bit_depth=request.bit_depth, sidecar=sidecar,
                       replace=replace)
    return RenderResult(str(path), str(sidecar_path(path)), rendered.offset_s, rendered.duration_s,
                        rendered.sample_rate, request.seed, model.name, warnings)


def adopted(request: RenderRequest, identity: Optional[dict] = None) -> Optional[RenderResult]:
    """The result of an explicit output that already exists and provably is this render
    (`engine.render_identity`), read back from its sidecar; None otherwise. Writes nothing."""
    if request.output is None or request.overwrite:
        return None
    path = Path(request.output)
    if not path.exists():
        return None
    doc = verified_sidecar(path, identity if identity is not None else identity_of(request))
    if doc is None:
        return None
    try:
        model = doc["model"]["name"] if isinstance(doc.get("model"), dict) else str(doc["model"])
        warnings = tuple(str(w) for w in doc.get("warnings", ()))
        return RenderResult(str(path), str(sidecar_path(path)), float(doc["offset_s"]), float(doc["duration_s"]),
                            int(doc["sample_rate"]), int(doc["seed"]), str(model),
                            warnings + (KEPT_WARNING.format(path=path),))
    except (KeyError, TypeError, ValueError):   # a sidecar missing what a result needs is not proof
        return None


# A copy whose surroundings fit hardly better than a typical span's (ratio 1.0) is a guess. White noise,
# which has nothing to match, scores 0.89 (infill) and 0.96 (continuation); music with real matches
# scores far lower (held-out infills 0.06-0.63, continuations 0.24-0.80, one of 16 at 1.05).
WEAK_MATCH_RATIO = 0.85


def _prior_warnings(info: dict) -> tuple[str, ...]:
    """A retrieval prior that found nothing to copy, found only a weak match, or chose between two readings
    of a transition's metre, says so (the sidecar has the same words under "warnings", the choice under
    "prior")."""
    if info.get("fallback") and info.get("fallback_to"):
        instead = ("the model generated the region instead" if info["fallback_to"] == "generative"
                   else f"used a plain {info['fallback_to']} instead")
        return (f"the retrieval prior was not used ({info['fallback']}); {instead}",)
    out: tuple[str, ...] = ()
    ratio = info.get("match_ratio")
    if info.get("kind") == "similarity" and isinstance(ratio, (int, float)) and ratio >= WEAK_MATCH_RATIO:
        out += (f"the best match found in the audio fits its surroundings hardly better than a typical span "
                f"(match ratio {ratio:.2f}; 1 = no better): listen before keeping it, or give more material "
                f"with --source",)
    other, tempo = info.get("tempo_a_other_reading_bpm"), info.get("tempo_bpm")
    if isinstance(other, (int, float)) and isinstance(tempo, (int, float)):
        # A 3:2 metre choice: right on most music measured, not all, and the producer knows the tempo.
        out += (f"clip A's beat can be heard at {tempo:.1f} or {other:.1f} BPM (compound or simple metre); B "
                f"follows {tempo:.1f}, where A's onsets repeat more strongly. If B lands off the beat, render "
                f"again with --bpm {other:.1f} (the bpm field from a DAW)",)
    other_b, tempo_b = info.get("tempo_b_other_reading_bpm"), info.get("tempo_b_bpm")
    if isinstance(other_b, (int, float)) and isinstance(tempo_b, (int, float)):
        out += (f"clip B's beat can be heard at {tempo_b:.1f} or {other_b:.1f} BPM; Segue read it at {tempo_b:.1f}, "
                f"where B's onsets repeat more strongly. If B lands off the beat, render again with "
                f"--b-bpm {other_b:.1f} (b_bpm over the bridge)",)
    return out


def _clipping_warnings(audio: np.ndarray, bit_depth: int) -> tuple[str, ...]:
    """Integer WAV clips at full scale; say how much of the clip that cuts (32-bit float keeps it all)."""
    if bit_depth == 32:
        return ()
    over = int(np.count_nonzero(np.abs(audio) > 1.0))
    if over == 0:
        return ()
    peak_db = 20 * np.log10(float(np.max(np.abs(audio))))
    return (f"{over} samples above full scale (peak +{peak_db:.2f} dBFS) were clipped by the {bit_depth}-bit "
            "output; --bit-depth 32 (float, the default) keeps them",)


def rerun_request(sidecar: dict, *, output: Optional[str] = None) -> RenderRequest:
    """The request a Segue sidecar recorded (every default already resolved), to render again.

    Refuses sidecars of renders from in-memory PCM (their audio is not on disk).
    """
    from .request import request_from_mapping

    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("request"), dict):
        raise InvalidRequest("not a Segue sidecar: it has no \"request\" object", code="bad_sidecar")
    fields = dict(sidecar["request"])
    for key in ("audio", "reference"):
        values = fields.get(key) if isinstance(fields.get(key), list) else [fields.get(key)]
        if any(isinstance(v, dict) and v.get("pcm") for v in values):
            raise InvalidRequest(f"this render's {key} was PCM sent over the bridge; it cannot be rerun from the "
                                 "sidecar alone", code="bad_sidecar")
    fields["output"] = output
    fields["overwrite"] = False
    return request_from_mapping(fields)


def _plain(v: object) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict))


# ---- variations: N takes of one request in one job ------------------------------------------------

def take_request(request: RenderRequest, index: int) -> RenderRequest:
    """Take `index` of a variations request, as a single-take request of its own.

    Take i uses seed + i and prior candidate + i, so its sidecar reruns exactly that take. With
    more than one take an explicit output `x.wav` becomes `x.take1.wav`, `x.take2.wav`, ...
    (default names differ anyway: they hash the request, seed included)."""
    if not 0 <= index < request.variations:
        raise InvalidRequest(f"take {index} is outside the {request.variations} take(s) of this request")
    output = request.output
    if output is not None and request.variations > 1:
        p = Path(output)
        output = str(p.with_name(f"{p.stem}.take{index + 1}{p.suffix}"))
    return request.replace(seed=request.seed + index, candidate=request.candidate + index, variations=1,
                           output=output)


def _take_progress(progress: Optional[ProgressCallback], index: int, count: int,
                   t0: float) -> Optional[ProgressCallback]:
    """One progress scale over all takes (take 2 of 4 runs from 25 % to 50 %), ETA over the whole job."""
    if progress is None:
        return None

    def on_step(ev: ProgressEvent) -> None:
        step, total = index * ev.total + ev.step, count * ev.total
        elapsed = time.monotonic() - t0
        eta = elapsed / step * (total - step) if step else None
        progress(ProgressEvent(step, total, elapsed, eta, ev.stage))
    return on_step


def render_takes(request: RenderRequest, *, model: Optional[Model] = None,
                 progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                 output_dir: Optional[str | Path] = None) -> list[RenderResult]:
    """Render the request's `variations` takes one after the other; each gets its own WAV and sidecar.

    All take requests are built (and validated) before the first render. If a take fails or the
    job is cancelled, the takes this call already wrote are removed again (files that existed
    before the job are left alone), so a job ends with all its takes or none. A take whose explicit
    output already holds this very take (written before a crash) is kept, not rendered again
    (`adopted`). Takes are separate
    renders, not one batch: measured in bench/variations.py, batching through the built-in model
    on CPU is not faster per take (see BENCHMARKS.md)."""
    takes = [take_request(request, i) for i in range(request.variations)]
    inputs = {Path(a).resolve() for a in request.audio if isinstance(a, str)}
    kept: list[Optional[RenderResult]] = [None] * len(takes)
    if not request.overwrite:   # refuse before the first take is rendered, not at take 3
        for i, take in enumerate(takes):
            if take.output is not None and Path(take.output).resolve() in inputs:
                raise InvalidRequest(f"the output {take.output} would overwrite an input", code="output_is_input")
            if take.output is not None and Path(take.output).exists():
                kept[i] = adopted(take)   # a take written before a crash is kept; anything else is refused
                if kept[i] is None:
                    raise InvalidRequest(f"the output {take.output} exists; pass overwrite to replace it",
                                         code="output_exists")
    if any(k is None for k in kept):
        model = model if model is not None else get_model(request.model)
    t0 = time.monotonic()
    results: list[RenderResult] = []
    new_files: list[Path] = []
    try:
        for i, take in enumerate(takes):
            if kept[i] is not None:
                results.append(kept[i])
                continue
            out = Path(take.output) if take.output is not None else default_output_path(
                take, Path(output_dir) if output_dir is not None else Path.cwd())
            existed = out.exists()
            result = render(take, model=model, progress=_take_progress(progress, i, len(takes), t0),
                            cancel=cancel, output_dir=output_dir)
            if not existed:
                new_files += [Path(result.path), Path(result.sidecar_path)]
            results.append(result)
    except BaseException:
        for f in new_files:
            f.unlink(missing_ok=True)
        raise
    return results
