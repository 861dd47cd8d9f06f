"""Every sampler the CLI offers renders at a sane level on the closed-form and the built-in model.

A regression guard for the textbook Heun step, whose corrector multiplied the change
of the denoised estimate by (sigma / sigma_next - 1) / 2 (15x on the cosine schedule's
first step) and wrote clipped full-scale noise through the built-in model.
"""
import numpy as np
import pytest

from engine.demo import demo_clip
from engine.render import render_audio
from engine.request import SAMPLER_NAMES, PCMAudio, RenderRequest

RATE = 44100
CLIP = demo_clip(4.0)
START, END = 1.5, 2.5


def rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


@pytest.mark.parametrize("model", ["analytic", "builtin"])
@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_fills_a_gap_at_the_level_of_the_music_around_it(model, sampler):
    request = RenderRequest(task="infill", audio=(PCMAudio(CLIP, RATE),), start_s=START, end_s=END, model=model,
                            sampler=sampler, steps=12, prior="none", span="region")
    out = render_audio(request).audio
    original = CLIP[:, int(START * RATE):int(END * RATE)]
    assert out.shape == original.shape
    assert np.all(np.isfinite(out))
    assert np.abs(out).max() < 1.0, "samples at full scale: the sampler diverged"
    assert 0.25 < rms(out) / rms(original) < 3.0, f"region level {rms(out):.3f} vs the music's {rms(original):.3f}"
