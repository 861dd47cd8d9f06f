"""The `segue` command: one subcommand per task, plus serve, presets, models and demo.

Every task subcommand builds the same `RenderRequest` the bridge builds, so a
render on the command line and one from a DAW are the same render.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

from . import __version__
from .errors import SegueError
from .progress import CancelToken, ProgressEvent
from .request import request_from_mapping

EXIT_ERROR = 2
EXIT_CANCELLED = 130


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling and guidance")
    g.add_argument("--model", help="model name (default: builtin), e.g. builtin, analytic, stable-audio:/path")
    g.add_argument("--preset", help="a preset name or .toml path; explicit options override it")
    g.add_argument("--steps", type=int, help="sampling steps (default 50)")
    g.add_argument("--seed", type=int, help="random seed (default 0); the same seed reproduces a render")
    g.add_argument("--sampler", choices=("ddim", "ddpm", "heun"))
    g.add_argument("--guidance-scale", type=float, dest="guidance_scale",
                   help="step size xi (default: the model's, 3e-2 latent / 3e-3 waveform)")
    g.add_argument("--step-mode", choices=("fixed", "normalized", "posterior"), dest="step_mode")
    g.add_argument("--loss", choices=("l1", "l2", "mrstft"), dest="recon_loss", help="reconstruction loss")
    g.add_argument("--recon-space", choices=("latent", "audio"), dest="recon_space")
    g.add_argument("--recon-t-range", type=float, nargs=2, dest="recon_t_range", metavar=("T_MIN", "T_MAX"),
                   help="diffusion times in [0, 1] at which the reconstruction loss acts (default 0 1)")
    g.add_argument("--no-data-consistency", action="store_const", const=False, dest="data_consistency",
                   help="guide by the gradient alone (no replacement of the known context)")
    g.add_argument("--prompt", help="text prompt, for models that take one (Stable Audio)")
    g.add_argument("--cfg-scale", type=float, dest="cfg_scale", help="classifier-free guidance scale for the prompt")
    g.add_argument("--context", type=float, dest="context_s", help="seconds of context each side (default 2)")
    g.add_argument("--seam-ms", type=float, dest="seam_ms", help="equal-power seam length (default 50 ms)")
    g.add_argument("--variations", type=int, help="takes to render (take i uses seed + i); --json prints a list")
    g.add_argument("--bpm", type=float, help="tempo hint (beats per minute), e.g. from the DAW")
    g.add_argument("--beat-offset", type=float, dest="beat_offset_s", help="a beat's time in the input (s)")
    o = p.add_argument_group("output")
    o.add_argument("-o", "--output", help="output .wav (default: next to the input's name, in the current folder)")
    o.add_argument("--span", choices=("full", "region"), help="write the whole edited clip (default) or the region only")
    o.add_argument("--bit-depth", type=int, choices=(16, 24, 32), dest="bit_depth")
    o.add_argument("--play", action="store_true", help="play the result through the default audio device")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    o.add_argument("--json", action="store_true", help="print the result as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segue", description="Guided diffusion editing of music.")
    parser.add_argument("--version", action="version", version=f"segue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    for task, help_text in (("infill", "fill a region from the audio around it"),
                            ("regenerate", "regenerate a region, keeping some of the original")):
        p = sub.add_parser(task, help=help_text)
        p.add_argument("audio")
        p.add_argument("--start", type=float, required=True, dest="start_s", help="region start (s)")
        p.add_argument("--end", type=float, required=True, dest="end_s", help="region end (s)")
        if task == "regenerate":
            p.add_argument("--mix", type=float, dest="mix_k", help="noise share k of the start (default 0.85)")
        else:
            p.add_argument("--native-inpaint", action="store_const", const=True, dest="native_inpaint",
                           help="use the model's trained inpainting path (Stable Audio 3 inpaint) instead of guidance")
        _add_common(p)

    p = sub.add_parser("continue", help="continue a clip past a cut point")
    p.add_argument("audio")
    p.add_argument("--duration", type=float, required=True, dest="duration_s", help="seconds to generate")
    p.add_argument("--start", type=float, dest="start_s", help="cut point (s, default: the end of the clip)")
    _add_common(p)

    p = sub.add_parser("transition", help="make a transition from clip A into clip B")
    p.add_argument("audio")
    p.add_argument("audio_b")
    p.add_argument("--start", type=float, dest="start_s", help="join point in A (s, default: its end)")
    p.add_argument("--b-start", type=float, dest="b_start_s", help="join point in B (s, default 0)")
    p.add_argument("--crossfade", type=float, dest="crossfade_s", help="regenerated crossfade length (default 2.5 s)")
    _add_common(p)

    p = sub.add_parser("style", help="push a clip toward a reference style")
    p.add_argument("audio")
    p.add_argument("--reference", help="reference audio file (or use a style --preset)")
    p.add_argument("--strength", type=float, help="1 regenerates from noise; below 1 keeps more of the input")
    p.add_argument("--start", type=float, dest="start_s")
    p.add_argument("--end", type=float, dest="end_s")
    p.add_argument("--style-weight", type=float, dest="style_weight")
    p.add_argument("--style-t-range", type=float, nargs=2, dest="style_t_range", metavar=("T_MIN", "T_MAX"))
    _add_common(p)

    _add_optional_subcommands(sub)
    p = sub.add_parser("models", help="list the models this installation can load")
    p.set_defaults(func=_cmd_models)
    p = sub.add_parser("demo", help="render a demo infill with the built-in model (no input needed)")
    p.add_argument("-o", "--output", default="segue-demo.wav")
    p.add_argument("--model", default="builtin")
    p.add_argument("--steps", type=int)
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--play", action="store_true")
    p.set_defaults(func=_cmd_demo)
    return parser


def _add_optional_subcommands(sub: Any) -> None:
    """Subcommands owned by other packages (the daemon, presets), added when they import."""
    try:
        from .presets import add_presets_cli
        add_presets_cli(sub)
    except ImportError:
        pass
    try:
        from bridge.serve import add_serve_arguments, serve_main
    except ImportError:
        return
    p = sub.add_parser("serve", help="run the engine daemon with its ZeroMQ and OSC front ends")
    add_serve_arguments(p)
    p.set_defaults(func=serve_main)


REQUEST_KEYS = ("start_s", "end_s", "duration_s", "b_start_s", "crossfade_s", "reference", "strength",
                "context_s", "seam_ms", "model", "sampler", "steps", "seed", "guidance_scale", "step_mode",
                "recon_loss", "recon_space", "recon_t_range", "style_weight", "style_t_range", "data_consistency", "mix_k", "output", "span",
                "bit_depth", "preset", "prompt", "cfg_scale", "native_inpaint", "variations", "bpm", "beat_offset_s")


def request_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {"task": args.command}
    fields["audio"] = (args.audio, args.audio_b) if args.command == "transition" else (args.audio,)
    for key in REQUEST_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            fields[key] = tuple(value) if isinstance(value, list) else value
    return fields


class ProgressBar:
    """A one-line progress bar with ETA on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, stream: Any = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_pct = -1

    def __call__(self, ev: ProgressEvent) -> None:
        pct = int(ev.fraction * 100)
        eta = f"{ev.eta_s:5.1f}s" if ev.eta_s is not None else "  ?  "
        if self.tty:
            filled = int(ev.fraction * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r[{bar}] {ev.step}/{ev.total} {pct:3d}% ETA {eta}")
            if ev.step == ev.total:
                self.stream.write("\n")
        elif pct // 10 != self._last_pct // 10 or ev.step == ev.total:
            self.stream.write(f"progress {ev.step}/{ev.total} {pct}% ETA {eta}\n")
        self._last_pct = pct
        self.stream.flush()


def play(path: str) -> Optional[str]:
    """Play a file; returns a message instead of raising when no audio device is usable."""
    try:
        import sounddevice as sd
        from pedalboard.io import AudioFile
        with AudioFile(path) as f:
            audio, rate = f.read(f.frames), f.samplerate
        sd.play(audio.T, int(rate))
        sd.wait()
        return None
    except Exception as e:  # PortAudio missing, no device, device busy: all mean "cannot preview here"
        return f"cannot play the result here ({type(e).__name__}: {e}); the file is at {path}"


def _cmd_render(args: argparse.Namespace) -> int:
    from .render import render_takes

    request = request_from_mapping(request_fields(args))
    cancel = CancelToken()
    try:
        result = render_takes(request, progress=None if args.quiet else ProgressBar(), cancel=cancel)
    except KeyboardInterrupt:
        sys.stderr.write("\ncancelled; nothing was written\n")
        return EXIT_CANCELLED
    _report(args, result)
    if args.play:
        msg = play(result[0].path)
        if msg:
            sys.stderr.write(msg + "\n")
    return 0


def _report(args: argparse.Namespace, result: Any) -> None:
    """One JSON object (a list of one per take with --variations), or one path per line."""
    takes = result if isinstance(result, list) else [result]
    if getattr(args, "json", False):
        items = [{"path": r.path, "sidecar": r.sidecar_path, "offset_s": r.offset_s, "duration_s": r.duration_s,
                  "sample_rate": r.sample_rate, "seed": r.seed, "model": r.model} for r in takes]
        print(json.dumps(items if getattr(args, "variations", None) is not None else items[0]))
    else:
        for r in takes:
            print(r.path)


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import available_models
    for name in available_models():
        print(name)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo_clip
    from .audio_io import write_audio_atomic
    from .render import render

    src = os.path.splitext(args.output)[0] + ".input.wav"
    write_audio_atomic(src, demo_clip(), 44100, bit_depth=24)
    fields = {"task": "infill", "audio": (src,), "start_s": 2.0, "end_s": 4.0, "model": args.model,
              "output": args.output}
    if args.steps:
        fields["steps"] = args.steps
    request = request_from_mapping(fields)
    t0 = time.monotonic()
    result = render(request, progress=None if args.quiet else ProgressBar())
    sys.stderr.write(f"infilled 2.0-4.0 s of {src} with model {result.model!r} in "
                     f"{time.monotonic() - t0:.1f} s -> {result.path}\n")
    print(result.path)
    if args.play:
        msg = play(result.path)
        if msg:
            sys.stderr.write(msg + "\n")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", _cmd_render)
    try:
        return int(func(args) or 0)
    except SegueError as e:
        sys.stderr.write(f"error [{e.code}]: {e.message}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return EXIT_CANCELLED


if __name__ == "__main__":
    raise SystemExit(main())
