"""A request resolved against its model, in one step: every "the model's default" made a number.

Requests leave `steps`, `step_mode`, `guidance_scale`, `prior`, `refine_strength`
and `refine_span` to the model, and `texture_iterations` to the style task's inputs (None). `plan_render` decides them all here, once,
and `RenderPlan.apply` writes them into the request the tasks run, so the tasks
and the sidecar read the same values, and a rerun of a sidecar does not depend
on the defaults of the version that reruns it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from .models.base import Model
from .request import RenderRequest

PRIOR_TASKS = ("infill", "regenerate", "continue", "transition")   # the tasks the retrieval prior serves


@dataclass(frozen=True)
class RenderPlan:
    """How one request is sampled on one model (what the sidecar records under "plan")."""

    model: str
    steps: int
    sampler: str
    schedule: str            # the model's noise schedule (engine/models/schedules.py)
    step_mode: str
    guidance_scale: float    # xi
    prior: str               # "similarity" or "none"
    refine_strength: Optional[float]
    refine_span: Optional[str]
    texture_iterations: int = 0  # the style task's texture match (0: off)

    def apply(self, request: RenderRequest) -> RenderRequest:
        """The request with every model default replaced by this plan's value."""
        return request.replace(steps=self.steps, sampler=self.sampler, step_mode=self.step_mode,
                               guidance_scale=self.guidance_scale, prior=self.prior,
                               refine_strength=self.refine_strength, refine_span=self.refine_span,
                               texture_iterations=self.texture_iterations)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan_render(request: RenderRequest, model: Model) -> RenderPlan:
    """Resolve `request` against `model`: the request's own values where it gives them, else the model's."""
    step_mode = request.step_mode or model.default_step_mode
    scale = request.guidance_scale if request.guidance_scale is not None else model.default_scale(step_mode)
    prior, strength, span = _prior_choices(request, model)
    return RenderPlan(model=model.name, steps=request.steps if request.steps is not None else model.default_steps,
                      sampler=request.sampler, schedule=str(model.info.get("schedule", "cosine")),
                      step_mode=step_mode, guidance_scale=float(scale), prior=prior, refine_strength=strength,
                      refine_span=span, texture_iterations=_texture_iterations(request))


def _texture_iterations(request: RenderRequest) -> int:
    """The request's own, else on for a style render toward a reference clip (no preset), else off.

    Toward a reference clip (`--reference`: matching EQ and loudness, no chain) the texture
    match moved held-out clips 8-22 % toward it instead of 2-12 %, and *raised* their
    chroma correlation with the input (the matching EQ's damage undone), for about 0.14 s
    per second of audio (BENCHMARKS.md). After a preset's chain it gains less and costs
    chroma, so a preset asks for it itself.
    """
    if request.texture_iterations is not None:
        return int(request.texture_iterations)
    from .style_task import REFERENCE_TEXTURE_ITERATIONS

    return REFERENCE_TEXTURE_ITERATIONS if request.task == "style" and request.reference is not None \
        and not request.preset else 0


def _prior_choices(request: RenderRequest, model: Model) -> tuple[str, Optional[float], Optional[str]]:
    """The retrieval prior's settings (engine/prior): the model's defaults, for the tasks that use it.

    The style task reads `refine_strength` as its own refinement pass; its default
    lives in engine/style_task.py.
    """
    if request.task == "style":
        from .style_task import DEFAULT_REFINE_STRENGTH

        strength = request.refine_strength if request.refine_strength is not None else DEFAULT_REFINE_STRENGTH
        return request.prior or "none", strength, request.refine_span
    if request.native_inpaint:   # the model's own inpainting path takes no prior
        return "none", request.refine_strength, request.refine_span
    prior = request.prior or getattr(model, "default_prior", "none")
    strength = request.refine_strength
    if strength is None:
        strength = getattr(model, "default_refine_strength", None)
    span = request.refine_span or getattr(model, "default_refine_span", None)
    return prior, strength, span
