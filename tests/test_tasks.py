"""The five tasks on the closed-form model: geometry, context, seeds, progress, cancel, bad input."""
import numpy as np
import pytest
import torch

from engine.errors import Cancelled, InvalidRequest
from engine.progress import CancelToken, ProgressTracker
from engine.regions import equal_power_curves, frame_mask, smooth_equal_power_curves
from engine.render import get_model, render, render_audio
from engine.request import PCMAudio, RenderRequest
from engine.tasks import generate_window, transition_mix

RATE = 44100


@pytest.fixture(scope="module")
def model():
    return get_model("analytic")


@pytest.fixture(scope="module")
def clip(model):
    """3 s drawn from the model's own prior (seed unrelated to the sampler's)."""
    return model.denoiser.sample_prior((1, 2, 3 * RATE), torch.Generator().manual_seed(123), torch.float32)[0].numpy()


def req(clip, **kw):
    base = dict(task="infill", audio=(PCMAudio(clip, RATE),), start_s=1.0, end_s=2.0, model="analytic", steps=12)
    base.update(kw)
    return RenderRequest(**base)


def test_infill_region_has_the_region_length_and_full_keeps_everything_else(clip):
    region = render_audio(req(clip, span="region"))
    assert region.audio.shape == (2, RATE) and region.offset_s == 1.0
    full = render_audio(req(clip, span="full"))
    assert full.audio.shape == clip.shape and full.offset_s == 0.0
    outside = np.ones(clip.shape[1], bool)
    outside[RATE:2 * RATE] = False
    assert np.array_equal(full.audio[:, outside], clip[:, outside])
    assert np.array_equal(full.audio[:, RATE:2 * RATE], region.audio)


def test_seams_blend_equal_power_from_the_original_inside_the_region(clip):
    r = render_audio(req(clip, span="region", seam_ms=10.0)).audio
    seam = int(0.01 * RATE)
    # the first sample is almost all original, the middle of the region all generated
    fo, fi = equal_power_curves(seam)
    assert fo[0] > 0.99 and abs(r[0, 0] - clip[0, RATE]) < 0.05 * np.abs(clip).max()
    assert np.allclose(fo ** 2 + fi ** 2, 1.0)


def test_same_seed_same_audio_other_seed_other_audio(clip):
    a = render_audio(req(clip, seed=5, span="region")).audio
    b = render_audio(req(clip, seed=5, span="region")).audio
    c = render_audio(req(clip, seed=6, span="region")).audio
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 0.1 * np.abs(a).mean()


def test_data_consistency_keeps_the_context_exact(model, clip):
    known = np.ones(clip.shape[1], bool)
    known[RATE:2 * RATE] = False
    gen, _ = generate_window(model, clip, known, req(clip), generator=torch.Generator().manual_seed(0),
                             tracker=ProgressTracker(12))
    assert np.abs(gen[:, known] - clip[:, known]).max() < 1e-5


def test_guidance_alone_reconstructs_the_context_within_a_bound(model, clip):
    known = np.ones(clip.shape[1], bool)
    known[RATE:2 * RATE] = False
    rms = np.sqrt((clip ** 2).mean())

    def context_error(**kw):
        gen, _ = generate_window(model, clip, known, req(clip, data_consistency=False, steps=30, **kw),
                                 generator=torch.Generator().manual_seed(0), tracker=ProgressTracker(30))
        return np.sqrt(((gen - clip)[:, known] ** 2).mean()) / rms

    unguided = context_error(guidance_scale=0.0)
    guided = context_error()
    assert unguided > 1.2            # independent draws differ by about sqrt(2) rms
    assert guided < 0.4              # the gradient alone pulls the context back


def test_frame_masks_only_trust_frames_wholly_outside_the_gap():
    sample_known = np.ones(4096, bool)
    sample_known[1000:2000] = False
    m = frame_mask(sample_known, frames=9, hop=512, offset=-512, span=1024)   # centred STFT frames
    # frame k covers [512k - 512, 512k + 512): frames 1..4 touch [1000, 2000)
    assert m.tolist() == [True, False, False, False, False, True, True, True, True]


def test_regenerate_keeps_more_of_the_original_than_infill(clip):
    orig = clip[:, RATE:2 * RATE]
    fill = render_audio(req(clip, span="region", seam_ms=0.0)).audio
    regen = render_audio(req(clip, task="regenerate", span="region", seam_ms=0.0, mix_k=0.5)).audio
    corr = lambda a: float(np.corrcoef(a.ravel(), orig.ravel())[0, 1])
    assert corr(regen) > corr(fill) + 0.2


def test_continuation_is_chunked_reports_progress_over_all_chunks_and_starts_at_the_cut(clip):
    events = []
    r = render_audio(req(clip, task="continue", start_s=2.0, end_s=None, duration_s=5.0, span="region"),
                     progress=events.append)
    assert r.audio.shape == (2, 5 * RATE) and r.offset_s == 2.0
    assert [e.step for e in events] == list(range(1, 25)) and events[-1].total == 24   # 2 chunks x 12 steps
    assert all(e.eta_s is not None and e.eta_s >= 0 for e in events)
    full = render_audio(req(clip, task="continue", start_s=2.0, end_s=None, duration_s=5.0, span="full"))
    assert full.audio.shape == (2, 7 * RATE)
    assert np.array_equal(full.audio[:, :2 * RATE - 2205], clip[:, :2 * RATE - 2205])


def test_transition_mix_is_constant_power_and_places_the_join():
    a = np.ones((2, 4 * RATE), np.float32)
    b = np.full((2, 4 * RATE), 2.0, np.float32)
    mix, g0, g1 = transition_mix(a, b, join_a=3 * RATE, join_b=RATE, xf=RATE)
    assert mix.shape == (2, 6 * RATE) and (g0, g1) == (int(2.5 * RATE), int(3.5 * RATE))
    assert mix[0, 0] == 1.0 and mix[0, -1] == 2.0
    fo, fi = smooth_equal_power_curves(RATE)
    assert np.allclose(mix[0, g0:g1], fo + 2 * fi)


def test_transition_fades_keep_power_and_start_without_a_kink():
    fo, fi = smooth_equal_power_curves(RATE)
    assert np.allclose(fo.astype(np.float64) ** 2 + fi.astype(np.float64) ** 2, 1.0, atol=1e-6)
    assert np.all(np.diff(fi) >= 0) and np.all(np.diff(fo) <= 0)
    # 2 % into the fade the incoming clip is inaudible under the outgoing one (the sine law: -30 dB).
    at = int(0.02 * RATE)
    assert 20 * np.log10(fi[at]) < -50 < 20 * np.log10(equal_power_curves(RATE)[1][at])


def test_transition_renders_the_crossfade_segment(clip):
    other = clip[:, ::-1].copy()
    r = render_audio(RenderRequest(task="transition", audio=(PCMAudio(clip, RATE), PCMAudio(other, RATE)),
                                   crossfade_s=1.0, model="analytic", steps=8, span="region"))
    assert r.audio.shape == (2, RATE) and r.offset_s == pytest.approx(2.5)


def test_cancel_stops_between_steps_and_writes_nothing(clip, tmp_path):
    token = CancelToken()

    def on_progress(ev):
        if ev.step == 3:
            token.cancel()

    out = tmp_path / "out.wav"
    with pytest.raises(Cancelled):
        render(req(clip, output=str(out)), progress=on_progress, cancel=token)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fields,match", [
    (dict(start_s=1.0, end_s=9.0), "audio lasts"),
    (dict(start_s=1.0, end_s=1.01), "at least"),
    (dict(task="continue", start_s=5.0, end_s=None, duration_s=1.0), "after the end"),
])
def test_regions_out_of_range_are_refused_before_anything_is_written(clip, tmp_path, fields, match):
    with pytest.raises(InvalidRequest, match=match):
        render(req(clip, output=str(tmp_path / "o.wav"), **fields))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fields,match", [
    (dict(end_s=0.5), "must be after"),
    (dict(steps=0), "steps"),
    (dict(steps=10 ** 6), "steps"),
    (dict(sampler="euler"), "sampler"),
    (dict(start_s=float("nan")), "finite"),
    (dict(start_s=0.0, end_s=500.0), "at most 120 s"),
    (dict(task="dance"), "task"),
    (dict(audio=()), "audio input"),
])
def test_invalid_requests_name_the_field(clip, fields, match):
    with pytest.raises(InvalidRequest, match=match):
        req(clip, **fields)


def test_style_guidance_moves_the_embedding_toward_the_reference():
    from engine.demo import demo_clip
    from engine.render import style_target

    x = demo_clip(1.5)
    ref = np.stack([0.3 * np.sin(2 * np.pi * 440.0 * np.arange(2 * RATE) / RATE)] * 2).astype(np.float32)
    # refine_strength 1: the model regenerates the whole clip (the style default is the DSP colour alone)
    base = dict(task="style", audio=(PCMAudio(x, RATE),), reference=PCMAudio(ref, RATE), model="analytic",
                steps=8, span="region", context_s=0.0, refine_strength=1.0)
    target = style_target(RenderRequest(**base), RATE)

    def distance(audio):
        with torch.no_grad():
            return float((target.embed(torch.from_numpy(audio)[None]) - target.reference).pow(2).sum())

    unguided = distance(render_audio(RenderRequest(**base, style_weight=0.0)).audio)
    guided = distance(render_audio(RenderRequest(**base)).audio)
    assert guided < 0.8 * unguided and guided < 0.9 * distance(x)


def test_style_reference_embedding_of_the_wrong_size_is_refused(clip):
    with pytest.raises(InvalidRequest, match="reference_embedding has 3 values"):
        render_audio(RenderRequest(task="style", audio=(PCMAudio(clip, RATE),), reference_embedding=(1.0, 2.0, 3.0),
                                   model="analytic", steps=2))


def test_a_loss_acts_only_inside_its_time_range(clip):
    from engine.guidance import Guidance, LossTerm
    from engine.samplers import sample_ddim
    from engine.schedule import get_sigmas_cosine, sigma_to_t

    model = get_model("analytic")
    sigmas = get_sigmas_cosine(10)
    seen = []

    def loss(x0, sigma):
        seen.append(round(float(sigma_to_t(sigma)), 4))
        return x0.abs().sum()

    guide = Guidance([LossTerm("l1", loss, 1.0, t_min=0.3, t_max=0.75)], scale=0.1, step_mode="normalized")
    sample_ddim(model.denoiser, torch.randn(1, 2, 256, generator=torch.Generator().manual_seed(0)) * float(sigmas[0]),
                sigmas, guide=guide)
    expected = [round(float(sigma_to_t(s)), 4) for s in sigmas[:-1] if 0.3 <= float(sigma_to_t(s)) <= 0.75]
    assert seen == expected and len(expected) == 4

    # A range that no step reaches is the same as no guidance at all.
    never = render_audio(req(clip, span="region", recon_t_range=(1.0, 1.0), data_consistency=False)).audio
    off = render_audio(req(clip, span="region", guidance_scale=0.0, data_consistency=False)).audio
    assert np.array_equal(never, off)
    with pytest.raises(InvalidRequest, match="t_min <= t_max"):
        req(clip, recon_t_range=(0.8, 0.2))


def test_prompts_and_native_inpaint_are_refused_by_models_that_lack_them(clip):
    with pytest.raises(InvalidRequest, match="takes no text prompt"):
        render_audio(req(clip, prompt="warm piano"))
    with pytest.raises(InvalidRequest, match="no trained inpainting path"):
        render_audio(req(clip, native_inpaint=True))
    with pytest.raises(InvalidRequest, match="infill task only"):
        req(clip, task="regenerate", native_inpaint=True)


def test_every_named_sampler_runs_a_guided_infill(clip):
    from engine.request import SAMPLER_NAMES

    for name in SAMPLER_NAMES:
        r = render_audio(req(clip, sampler=name, steps=4, span="region"))
        assert r.audio.shape == (2, RATE) and np.isfinite(r.audio).all(), name
