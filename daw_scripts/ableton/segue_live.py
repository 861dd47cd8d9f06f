"""Segue for Ableton Live, through AbletonOSC (a remote script that exposes the Live API over OSC).

    python segue_live.py infill --start 2.0 --end 3.5 [--preset P] [--steps N]   # times in the clip, s
    python segue_live.py regenerate --start 2.0 --end 3.5
    python segue_live.py style --preset lofi-warm
    python segue_live.py continue --duration 4
    python segue_live.py transition --other TRACK SCENE     # the selected clip into another clip
    python segue_live.py transition --other TRACK SCENE --keep-joins   # join exactly at the markers
    python segue_live.py infill --start 2.0 --end 3.5 --takes 4 --snap-bars   # 4 takes, range on whole bars

Runs next to Live (not inside it). It asks AbletonOSC (UDP 11000, replies on 11001) for the selected
Session clip, its file and markers, renders through `segue-client`, and puts the result into the
next empty clip slot of the same track (N takes: the next N empty slots, one take each). The
song's tempo and time signature (`/live/song/get/tempo`, `signature_numerator`,
`signature_denominator`) go with the request as a beat-grid hint, and `--snap-bars` moves the
range to whole bars counted from the clip's start marker. What the Live API allows, and what it does not, is in
README.md: in short, AbletonOSC has no time selection, no arrangement clip files, and upstream
has no call that creates an audio clip from a file; Live 12.0.5 added `ClipSlot.create_audio_clip`,
which AbletonOSC forks expose as `/live/clip_slot/create_audio_clip`. Without it the script
prints the rendered file for you to drag into Live.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from typing import Any, Optional

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

TASKS = ("infill", "regenerate", "continue", "transition", "style")
NOT_RUNNING = "The Segue daemon is not running: start it with `segue serve` and try again."
NO_CLIENT = ("segue-client was not found on the PATH: set SEGUE_CLIENT to its full command line "
             "(e.g. /home/me/venv/bin/segue-client).")


class LiveError(RuntimeError):
    """Live (AbletonOSC) did not answer, or the selection cannot be rendered; the message says which."""


class AbletonOSC:
    """Request/reply over AbletonOSC: send to `port`, collect replies on `reply_port` by address."""

    def __init__(self, host: str = "127.0.0.1", port: int = 11000, reply_port: int = 11001,
                 timeout_s: float = 3.0) -> None:
        self.timeout_s = timeout_s
        self._client = SimpleUDPClient(host, port)
        self._replies: dict[str, list[tuple]] = {}
        self._cond = threading.Condition()
        disp = Dispatcher()
        disp.set_default_handler(self._on_message)
        self._server = ThreadingOSCUDPServer(("127.0.0.1", reply_port), disp)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _on_message(self, address: str, *args: Any) -> None:
        with self._cond:
            self._replies.setdefault(address, []).append(args)
            self._cond.notify_all()

    def query(self, address: str, *args: Any, reply_to: Optional[str] = None) -> tuple:
        """Send and wait for the reply on the same address (or `reply_to`); /live/error fails fast."""
        want = reply_to or address
        with self._cond:
            self._replies.pop(want, None)
            self._replies.pop("/live/error", None)
        self._client.send_message(address, list(args))
        with self._cond:
            ok = self._cond.wait_for(lambda: want in self._replies or "/live/error" in self._replies,
                                     timeout=self.timeout_s)
            if "/live/error" in self._replies:
                raise LiveError(f"AbletonOSC: {' '.join(map(str, self._replies['/live/error'][0]))}")
            if not ok:
                raise LiveError(f"no reply to {address} within {self.timeout_s:.0f} s: is Live running with the "
                                "AbletonOSC control surface enabled?")
            return self._replies[want][0]

    def send(self, address: str, *args: Any) -> None:
        """Fire and forget (setters and methods that AbletonOSC does not answer)."""
        self._client.send_message(address, list(args))

    def clip(self, track: int, scene: int, prop: str) -> Any:
        reply = self.query(f"/live/clip/get/{prop}", track, scene)
        return reply[2] if len(reply) > 2 else None


def selected_clip(live: AbletonOSC) -> tuple[int, int]:
    track, scene = live.query("/live/view/get/selected_clip")[:2]
    return int(track), int(scene)


def clip_facts(live: AbletonOSC, track: int, scene: int) -> dict:
    """File and marker facts of a Session clip; only unwarped audio clips have times in seconds."""
    has = live.query("/live/clip_slot/get/has_clip", track, scene)
    if not has[2]:
        raise LiveError(f"there is no clip in track {track + 1}, scene {scene + 1}")
    if not live.clip(track, scene, "is_audio_clip"):
        raise LiveError("the selected clip is a MIDI clip; Segue renders audio clips")
    path = live.clip(track, scene, "file_path")
    if not path:
        raise LiveError("the clip has no file (recorded but not saved?)")
    if live.clip(track, scene, "warping"):
        raise LiveError("the clip is warped: Live reports its markers in beats, not in seconds of the file; "
                        "turn Warp off for this clip (or consolidate it) and try again")
    return {"track": track, "scene": scene, "file": path,
            "start_s": float(live.clip(track, scene, "start_marker") or 0.0),
            "end_s": float(live.clip(track, scene, "end_marker") or 0.0),
            "name": live.clip(track, scene, "name") or ""}


def song_grid(live: AbletonOSC) -> dict:
    """Live's tempo (quarter notes per minute, Song.tempo) and time signature, and the bar length in seconds."""
    tempo = float(live.query("/live/song/get/tempo")[0])
    num = int(live.query("/live/song/get/signature_numerator")[0])
    denom = int(live.query("/live/song/get/signature_denominator")[0])
    return {"bpm": tempo, "numerator": num, "denominator": denom, "bar_s": num * 4 / denom * 60.0 / tempo}


def snap_to_bars(start: float, end: float, bar_s: float) -> tuple[float, float]:
    """Seconds from the clip's start marker moved to the nearest whole bars (at least one bar)."""
    a, b = round(start / bar_s) * bar_s, round(end / bar_s) * bar_s
    return a, max(b, a + bar_s)


def client_args(task: str, a: dict, b: Optional[dict], args: argparse.Namespace,
                grid: Optional[dict] = None) -> list[str]:
    """segue-client arguments: times are seconds in the clip's file (clip-relative input + start marker).

    `grid` (Live's tempo) adds --bpm and --beat-offset: the clip's start marker, where a launched
    Session clip meets the bar line; with `args.snap_bars` the range is moved to whole bars."""
    tempo = ["--bpm", f"{grid['bpm']:.6f}", "--beat-offset", f"{a['start_s']:.6f}"] if grid else []
    if grid and getattr(args, "snap_bars", False) and args.start is not None and args.end is not None:
        args.start, args.end = snap_to_bars(args.start, args.end, grid["bar_s"])
    if grid and getattr(args, "snap_bars", False) and task == "continue":
        args.duration = max(round(args.duration / grid["bar_s"]), 1) * grid["bar_s"]
    return _client_args(task, a, b, args) + tempo


def _client_args(task: str, a: dict, b: Optional[dict], args: argparse.Namespace) -> list[str]:
    if task == "transition":
        return [a["file"], b["file"], "--start", f"{a['end_s']:.6f}", "--b-start", f"{b['start_s']:.6f}",
                *(["--crossfade", f"{args.crossfade:.6f}"] if args.crossfade else []),
                *(["--join-search", f"{args.join_search:.6f}"] if getattr(args, "join_search", None) is not None
                  else []), "--span", "region"]
    if task == "continue":
        return [a["file"], "--start", f"{a['end_s']:.6f}", "--duration", f"{args.duration:.6f}", "--span", "full"]
    start = a["start_s"] + (args.start if args.start is not None else 0.0)
    end = a["start_s"] + args.end if args.end is not None else a["end_s"]
    if task in ("infill", "regenerate") and (args.start is None or args.end is None):
        raise LiveError(f"{task} needs --start and --end (seconds from the clip's start marker): "
                        "the Live API has no time selection")
    if not a["start_s"] <= start < end <= max(a["end_s"], start):
        raise LiveError(f"the range [{start:.3f}, {end:.3f}) s is outside the clip's markers "
                        f"[{a['start_s']:.3f}, {a['end_s']:.3f}) s")
    return [a["file"], "--start", f"{start:.6f}", "--end", f"{end:.6f}", "--span", "full"]


def render(task: str, cargs: list[str], extra: list[str], timeout_s: float, takes: int = 1) -> list[dict]:
    """Run segue-client (its progress goes to this terminal; Ctrl-C cancels the job); one reply per take."""
    cmd = [*shlex.split(os.environ.get("SEGUE_CLIENT", "segue-client")), task, *cargs, *extra,
           "--variations", str(takes), "--json"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise LiveError(NO_CLIENT) from None
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except KeyboardInterrupt:
        # Ctrl-C reached segue-client too (same terminal): let it cancel the job in the daemon and exit
        proc.wait(30)
        raise LiveError("cancelled; the job was cancelled in the daemon and nothing was placed") from None
    except subprocess.TimeoutExpired:
        proc.send_signal(2)   # SIGINT: segue-client cancels the job, then exits
        proc.wait(30)
        raise
    lines = [ln for ln in out.splitlines() if ln.startswith(("{", "["))]
    reply = json.loads(lines[-1]) if lines else {}
    if proc.returncode == 0 and isinstance(reply, list) and reply and all("path" in r for r in reply):
        return reply
    e = reply.get("error", {}) if isinstance(reply, dict) else {}
    if e.get("code") == "unreachable":
        raise LiveError(NOT_RUNNING)
    if proc.returncode == 127:
        raise LiveError(NO_CLIENT)
    raise LiveError(f"render failed: {e.get('code', proc.returncode)} {e.get('message', '')}".strip())


def place(live: AbletonOSC, track: int, after_scene: int, path: str, name: str) -> Optional[int]:
    """Put `path` into the next empty slot of `track` (below `after_scene`); None if Live cannot."""
    n_scenes = int(live.query("/live/song/get/num_scenes")[0])
    for scene in range(after_scene + 1, n_scenes):
        if not live.query("/live/clip_slot/get/has_clip", track, scene)[2]:
            break
    else:  # no empty slot below: add a scene at the end (AbletonOSC does not reply to this)
        live.send("/live/song/create_scene", -1)
        scene = n_scenes
        if int(live.query("/live/song/get/num_scenes")[0]) != n_scenes + 1:
            return None
    # Live 12.0.5+ ClipSlot.create_audio_clip(path), exposed by AbletonOSC forks under this address;
    # upstream AbletonOSC answers /live/error (unknown address) and the slot stays empty.
    live.send("/live/clip_slot/create_audio_clip", track, scene, path)
    try:
        created = live.query("/live/clip_slot/get/has_clip", track, scene)[2]
    except LiveError as e:
        if "create_audio_clip" not in str(e):
            raise
        return None
    if not created:
        return None
    live.send("/live/clip/set/name", track, scene, name)
    try:  # AbletonOSC does not answer setters: a read-back makes sure Live took the name before we report
        live.clip(track, scene, "name")
    except LiveError:
        pass  # the clip is placed; only its name may be missing
    return scene


def b_source_at_clip_end(take: dict, a: dict, b: dict) -> float:
    """The second of B's file that a transition clip's end has reached: segue-client's "transition"
    reply (the engine may have moved the joins and stretched B), else the requested joins (A's end
    marker and B's start marker)."""
    t = take.get("transition")
    if isinstance(t, dict) and isinstance(t.get("b_at_clip_end_s"), (int, float)):
        return float(t["b_at_clip_end_s"])
    return b["start_s"] + float(take["offset_s"]) + float(take["duration_s"]) - a["end_s"]


def set_marker(live: AbletonOSC, clip: dict, marker: str, value: float) -> Optional[float]:
    """Set a clip's start or end marker (seconds: the clip is unwarped) and return it as Live has it
    (OSC floats are 32-bit); None if Live did not take it (an AbletonOSC without the setter, or a
    value Live refuses). AbletonOSC does not answer setters, so the marker is read back."""
    live.send(f"/live/clip/set/{marker}", clip["track"], clip["scene"], float(value))
    try:
        got = live.clip(clip["track"], clip["scene"], marker)
    except LiveError:
        return None
    ok = isinstance(got, (int, float)) and abs(float(got) - value) < 1e-4
    return float(got) if ok else None


def trim_transition(live: AbletonOSC, a: dict, b: dict, take: dict) -> Optional[dict]:
    """A's end marker to where the transition starts, B's start marker to where the clip's B material
    ended, so A, the transition, then B play through. None if Live did not take both."""
    a_end, b_start = float(take["offset_s"]), b_source_at_clip_end(take, a, b)
    if not (a["start_s"] < a_end and b_start < b["end_s"]):
        return None
    a_set = set_marker(live, a, "end_marker", a_end)
    if a_set is None:
        return None
    b_set = set_marker(live, b, "start_marker", b_start)
    if b_set is None:
        set_marker(live, a, "end_marker", a["end_s"])   # leave A as it was
        return None
    return {"a_end_marker": a_set, "b_start_marker": b_set}


def run(args: argparse.Namespace, live: AbletonOSC) -> dict:
    track, scene = selected_clip(live)
    if args.task == "transition" and not args.other:
        raise LiveError("transition needs --other TRACK SCENE (1-based) for the second clip")
    a = clip_facts(live, track, scene)
    b = clip_facts(live, *args.other) if args.task == "transition" else None
    grid = song_grid(live)
    cargs = client_args(args.task, a, b, args, grid)
    extra: list[str] = []
    for opt in ("preset", "model", "steps", "seed", "strength"):
        v = getattr(args, opt)
        if v is not None:
            extra += [f"--{opt}", str(v)]
    takes = render(args.task, cargs, extra, args.timeout, args.takes)
    slots: list[Optional[int]] = []
    after = scene
    for n, take in enumerate(takes, 1):
        label = f"Segue {args.task} {a['name']}".strip() + (f" take {n}" if len(takes) > 1 else "")
        slot = place(live, track, after, take["path"], label)
        slots.append(slot)
        if slot is None:
            break
        after = slot
    trimmed = trim_transition(live, a, b, takes[0]) if b is not None and slots[0] is not None else None
    return {"track": track, "scene": scene, "placed_scene": slots[0], "placed_scenes": slots,
            "path": takes[0]["path"], "paths": [t["path"] for t in takes], "reply": takes[0], "args": cargs,
            "grid": grid, "trimmed": trimmed}


def main(argv: Optional[list[str]] = None) -> int:
    # Ctrl-C is the cancel; a launcher that ignored SIGINT (nohup, a background job) must not swallow it.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    ap = argparse.ArgumentParser(description="Render the selected Live clip with Segue (via AbletonOSC).")
    ap.add_argument("task", choices=TASKS)
    ap.add_argument("--start", type=float, help="seconds from the clip's start marker")
    ap.add_argument("--end", type=float, help="seconds from the clip's start marker")
    ap.add_argument("--duration", type=float, default=4.0, help="continue: seconds to generate")
    ap.add_argument("--crossfade", type=float)
    joins = ap.add_mutually_exclusive_group()
    joins.add_argument("--join-search", type=float,
                       help="transition: how far (s) the engine may move each join to land on matching beats")
    joins.add_argument("--keep-joins", action="store_true", help="transition: keep the join points (--join-search 0)")
    ap.add_argument("--other", type=int, nargs=2, metavar=("TRACK", "SCENE"),
                    help="transition: the second clip (1-based track and scene)")
    for opt in ("preset", "model"):
        ap.add_argument(f"--{opt}")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--strength", type=float)
    ap.add_argument("--takes", type=int, default=1, help="variations to render (1-16), one clip slot each")
    ap.add_argument("--snap-bars", action="store_true",
                    help="move --start/--end (and a continuation's --duration) to whole bars of the song's tempo")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=11000)
    ap.add_argument("--reply-port", type=int, default=11001)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args(argv)
    if args.other:
        args.other = (args.other[0] - 1, args.other[1] - 1)
    if args.keep_joins:
        args.join_search = 0.0
    live = AbletonOSC(args.host, args.port, args.reply_port)
    try:
        out = run(args, live)
    except (LiveError, subprocess.TimeoutExpired) as e:
        sys.stderr.write(f"segue-live: {e}\n")
        return 1
    finally:
        live.close()
    if args.task == "transition" and out["placed_scene"] is not None and out["trimmed"] is None:
        sys.stderr.write("segue-live: Live did not take the new clip markers (/live/clip/set/start_marker, "
                         "end_marker); A and B keep theirs\n")
    if None in out["placed_scenes"]:
        left = out["paths"][len(out["placed_scenes"]) - 1:]
        sys.stderr.write(f"segue-live: Live cannot create an audio clip from a file through this AbletonOSC; "
                         f"drag {' '.join(left)} into Live\n")
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
