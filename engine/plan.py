"""A request resolved against its model, in one step: every "the model's default" made a number.

Requests leave `steps`, `step_mode`, `guidance_scale`, `prior`, `refine_strength`
and `refine_span` to the model (None). `plan_render` decides them all here, once,
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

    def apply(self, request: RenderRequest) -> RenderRequest:
        """The request with every model default replaced by this plan's value."""
        return request.replace(steps=self.steps, sampler=self.sampler, step_mode=self.step_mode,
                               guidance_scale=self.guidance_scale, prior=self.prior,
                               refine_strength=self.refine_strength, refine_span=self.refine_span)

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
                      refine_span=span)


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
        by_task = getattr(model, "refine_strength_by_task", {}) or {}
        strength = by_task.get(request.task, getattr(model, "default_refine_strength", None))
    span = request.refine_span or getattr(model, "default_refine_span", None)
    return prior, strength, span
