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
from importlib import metadata
from typing import Any, Optional, Sequence

from . import __version__
from .errors import SegueError
from .progress import CancelToken, ProgressEvent, interrupt_cancels
from . import schema
from .request import request_from_mapping

EXIT_ERROR = 2
EXIT_CANCELLED = 130


_GROUPS = {"start_s": "region", "end_s": "region", "duration_s": "region", "b_start_s": "region",
           "crossfade_s": "region", "reference": "style", "strength": "style", "style_loss": "style",
           "style_weight": "style", "style_t_range": "style", "prior": "retrieval prior", "sources": "retrieval prior",
           "candidate": "retrieval prior", "refine_strength": "retrieval prior", "refine_span": "retrieval prior",
           "bpm": "retrieval prior", "b_bpm": "retrieval prior", "beat_offset_s": "retrieval prior", "output": "output",
           "span": "output", "bit_depth": "output", "variations": "output", "overwrite": "output"}

TASK_HELP = {
    "infill": "fill a region from the audio around it",
    "regenerate": "regenerate a region, keeping some of the original",
    "continue": "continue a clip past a cut point",
    "transition": "make a transition from clip A into clip B",
    "style": "push a clip toward a reference style",
}


def _group_title(spec: schema.FieldSpec) -> str:
    return _GROUPS.get(spec.name, "sampling and guidance")


def _add_task_parser(sub: Any, task: str) -> argparse.ArgumentParser:
    """One task subcommand: its inputs, then every request field that applies to it (from engine/schema.py)."""
    p = sub.add_parser(task, help=TASK_HELP[task])
    p.add_argument("audio", help="input audio file" + (" (clip A)" if task == "transition" else ""))
    if task == "transition":
        p.add_argument("audio_b", help="clip B")
    schema.add_cli_options(p, task=task, group_titles=_group_title)
    o = p.add_argument_group("result")
    o.add_argument("--play", action="store_true", help="play the result through the default audio device")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    o.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segue", description="Guided diffusion editing of music.")
    parser.add_argument("--version", action="version", version=f"segue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for task in schema.TASKS:
        _add_task_parser(sub, task)

    _add_optional_subcommands(sub)
    p = sub.add_parser("rerun", help="render a result again from its JSON sidecar (the same samples, bit for bit)")
    p.add_argument("sidecar", help="the .json beside a Segue result")
    p.add_argument("-o", "--output", help="where to write (default: NAME.rerun.wav beside the sidecar)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--play", action="store_true", help="play the result through the default audio device")
    p.set_defaults(func=_cmd_rerun)
    p = sub.add_parser("models", help="list the models: kind, where the weights are, size, availability")
    p.add_argument("names", nargs="*", metavar="MODEL", help="describe these (e.g. stable-audio:/path/to/folder)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=_cmd_models)
    p = sub.add_parser("demo", help="render a demo infill with the built-in model (no input needed)")
    p.add_argument("-o", "--output", default="segue-demo.wav")
    p.add_argument("--model", default="builtin")
    p.add_argument("--steps", type=int)
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--play", action="store_true")
    p.set_defaults(func=_cmd_demo)
    return parser


COMMANDS_GROUP = "segue.commands"   # entry points: NAME = module:function(subparsers) adding `segue NAME`


def _add_optional_subcommands(sub: Any) -> None:
    """Presets (engine) and the subcommands other packages register (the bridge's `serve`).

    The bridge sits above the engine, so the engine does not import it: installed
    packages name a `function(subparsers)` in the `segue.commands` entry point group.
    """
    from .presets import add_presets_cli

    add_presets_cli(sub)
    try:
        eps = metadata.entry_points(group=COMMANDS_GROUP)
    except Exception:  # broken third-party metadata must not take the engine's own commands down
        return
    for ep in sorted(eps, key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as e:   # the package is installed but its dependencies are not
            p = sub.add_parser(ep.name, help=f"unavailable here ({e})")
            p.set_defaults(func=lambda _args, e=e, name=ep.name: _unavailable(name, e))
            continue
        register(sub)


def _unavailable(name: str, error: Exception) -> int:
    sys.stderr.write(f"error [unavailable]: `segue {name}` cannot run here: {error}\n")
    return EXIT_ERROR


def request_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields a task subcommand's command line sets (options left out stay unset)."""
    fields: dict[str, Any] = {"task": args.command}
    fields["audio"] = (args.audio, args.audio_b) if args.command == "transition" else (args.audio,)
    fields.update(schema.fields_from_args(args))
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
        doing = "" if ev.stage == "sampling" else f" {ev.stage}"    # a long step that is not a sampler step
        if self.tty:
            filled = int(ev.fraction * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r[{bar}] {ev.step}/{ev.total} {pct:3d}% ETA {eta}{doing}\033[K")
            if ev.step == ev.total:
                self.stream.write("\n")
        elif doing or pct // 10 != self._last_pct // 10 or ev.step == ev.total:
            self.stream.write(f"progress {ev.step}/{ev.total} {pct}% ETA {eta}{doing}\n")
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


def _cmd_render(args: argparse.Namespace, request: Any = None) -> int:
    from .render import render_takes

    request = request if request is not None else request_from_mapping(request_fields(args))
    cancel = CancelToken()
    try:
        result = render_takes(request, progress=None if args.quiet else ProgressBar(), cancel=cancel)
    except KeyboardInterrupt:
        sys.stderr.write("\ncancelled; nothing was written\n")
        return EXIT_CANCELLED
    for warning in dict.fromkeys(w for r in result for w in r.warnings):
        sys.stderr.write(f"warning: {warning}\n")
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


def _cmd_rerun(args: argparse.Namespace) -> int:
    """Read a sidecar, and render its recorded request (every default resolved) to a new file."""
    from pathlib import Path

    from .errors import InvalidRequest
    from .render import rerun_request

    path = Path(args.sidecar)
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidRequest(f"sidecar {path} not found", code="file_not_found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidRequest(f"{path} is not a readable JSON sidecar ({e})", code="bad_sidecar") from None
    output = args.output or str(path.with_name(path.stem + ".rerun.wav"))
    return _cmd_render(args, rerun_request(sidecar, output=output))


def _cmd_models(args: argparse.Namespace) -> int:
    from .models.catalog import catalog, describe, table

    entries = [describe(n) for n in args.names] if args.names else catalog()
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=2))
    else:
        print(table(entries))
    return 0


DEMO_SECONDS = 16.0
DEMO_REGION = (9.0, 11.0)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo_clip
    from .audio_io import write_audio_atomic
    from .render import render

    src = os.path.splitext(args.output)[0] + ".input.wav"
    # 16 s (two passes of its 8 s chord loop), so the retrieval prior has music to find the gap's in.
    write_audio_atomic(src, demo_clip(DEMO_SECONDS), 44100, bit_depth=24)
    fields = {"task": "infill", "audio": (src,), "start_s": DEMO_REGION[0], "end_s": DEMO_REGION[1],
              "model": args.model, "output": args.output, "overwrite": True}   # the demo's own files
    if args.steps:
        fields["steps"] = args.steps
    request = request_from_mapping(fields)
    t0 = time.monotonic()
    result = render(request, progress=None if args.quiet else ProgressBar())
    for warning in result.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    sys.stderr.write(f"infilled {DEMO_REGION[0]:.1f}-{DEMO_REGION[1]:.1f} s of {src} with model {result.model!r} in "
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
    interrupt_cancels()
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
