"""Run Segue on an Ardour 7 session without the GUI: render, import, place, save.

    python segue_ardour_headless.py SESSION_DIR NAME --task infill [--track Source] [--marker segue]
        [--preset P] [--steps N] [--seed N] [--model M] [--duration S] [--strength F] [--out-track Segue]
        [--takes N] [--snap-bars] [--crossfade S] [--keep-joins | --join-search S]

Three steps, because Ardour's headless tool cannot import audio:
1. `ardour7-lua segue_headless.lua render ...` reads the range marker and the regions under it, exports
   the audio, calls `segue-client` (the daemon renders) and reports where the clip belongs;
2. `ardour_session.py` imports the clip into the closed session (converted to the session's rate);
3. `ardour7-lua segue_headless.lua place ...` puts it (every take, layered) on the output track at
   that position, trims the two regions of a transition to its edges (one undo step) and saves.
Prints one JSON object describing what was placed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ardour_session  # noqa: E402


class HeadlessError(RuntimeError):
    """A step failed; the message carries Ardour's or segue-client's own words."""


def lua_tool() -> str:
    for name in ("ardour7-lua", "ardour8-lua", "ardour6-lua"):
        path = shutil.which(name)
        if path:
            return path
    raise HeadlessError("no Ardour headless Lua tool (ardour7-lua) on PATH; install Debian's `ardour` package")


# What each command prints once its work is done and saved: a crash after it (Ardour's headless
# tool sometimes segfaults while closing the session) loses nothing.
DONE_TAGS = {"render": "SEGUE_RESULT", "place": "SEGUE_SAVED"}


def _run_lua(args: list[str], timeout_s: float, env: Optional[dict] = None) -> dict[str, list[str]]:
    for attempt in (1, 2):
        proc = subprocess.run([lua_tool(), str(HERE / "segue_headless.lua"), *args], capture_output=True, text=True,
                              timeout=timeout_s, env=env)
        tagged: dict[str, list[str]] = {}
        for line in proc.stdout.splitlines():
            if line.startswith("SEGUE_"):
                tag, _, rest = line.partition(" ")
                tagged.setdefault(tag, []).append(rest)
        crashed = proc.returncode < 0 and "SEGUE_ERROR" not in tagged
        if crashed and DONE_TAGS.get(args[0]) in tagged:
            return tagged            # the work was saved before Ardour crashed on its way out
        if crashed and attempt == 1 and "SEGUE_SAVED" not in tagged:
            continue                 # crashed before changing the session: run it once more
        break
    if "SEGUE_ERROR" in tagged or proc.returncode != 0:
        msg = "; ".join(tagged.get("SEGUE_ERROR", [])) or proc.stderr.strip()[-2000:] or f"exit {proc.returncode}"
        raise HeadlessError(msg)
    return tagged


def run(session_dir: str, name: str, task: str, *, track: str = "Source", marker: str = "segue",
        out_track: str = "Segue", options: Optional[dict] = None, timeout_s: float = 600.0,
        env: Optional[dict] = None) -> dict:
    """Render `task` for the regions of `track` under range marker `marker` and place the result.

    `env` is the environment of the Ardour processes (SEGUE_CLIENT, SEGUE_ENDPOINT reach the script)."""
    opts = [f"{k}={v}" for k, v in (options or {}).items() if v is not None]
    rendered = _run_lua(["render", session_dir, name, task, track, marker, *opts], timeout_s, env)
    if "SEGUE_RESULT" not in rendered:
        raise HeadlessError("the render step reported no result")
    result = json.loads(rendered["SEGUE_RESULT"][-1])
    stem = f"segue-{task}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    paths = result.get("paths") or [result["path"]]
    clip_names = [stem] if len(paths) == 1 else [f"{stem}-take{i}" for i in range(1, len(paths) + 1)]
    session_file = Path(session_dir) / f"{name}.ardour"
    region_ids = [ardour_session.import_clip(session_file, p, c) for p, c in zip(paths, clip_names)]
    trim = [track, marker, str(result["b_target"])] if task == "transition" else []
    placed = _run_lua(["place", session_dir, name, ",".join(clip_names), str(result["position"]), out_track, task,
                       *trim], timeout_s, env)
    takes = []
    for line in placed["SEGUE_PLACED"]:
        track_name, position, length = line.rsplit(" ", 2)
        takes.append({"track": track_name, "position": int(position), "length": int(length)})
    trimmed = []
    for line in placed.get("SEGUE_TRIMMED", []):
        rname, position, length, start = line.rsplit(" ", 3)
        trimmed.append({"name": rname, "position": int(position), "length": int(length), "start": int(start)})
    take1 = takes[0]    # take 1 is the top layer (placed last)
    result.update({"region_id": region_ids[0], "region_ids": region_ids, "clip_name": clip_names[0],
                   "clip_names": clip_names, "track": take1["track"], "placed_position": take1["position"],
                   "placed_length": take1["length"], "takes": takes, "trimmed": trimmed,
                   "regions": rendered.get("SEGUE_REGION", []), "command": rendered.get("SEGUE_COMMAND", [""])[-1]})
    return result


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("session_dir")
    ap.add_argument("name", help="session (snapshot) name")
    ap.add_argument("--task", required=True, choices=("infill", "regenerate", "continue", "transition", "style"))
    ap.add_argument("--track", default="Source", help="track whose regions are the selection")
    ap.add_argument("--marker", default="segue", help="range marker that is the time selection")
    ap.add_argument("--out-track", default="Segue")
    for opt in ("preset", "model", "reference", "endpoint"):
        ap.add_argument(f"--{opt}")
    for opt in ("steps", "seed", "takes"):
        ap.add_argument(f"--{opt}", type=int)
    ap.add_argument("--snap-bars", action="store_true", help="move the marker's range to whole bars of the tempo map")
    for opt in ("duration", "strength", "crossfade", "context", "timeout"):
        ap.add_argument(f"--{opt}", type=float)
    joins = ap.add_mutually_exclusive_group()
    joins.add_argument("--join-search", type=float,
                       help="transition: how far (s) the engine may move each join to land on matching beats")
    joins.add_argument("--keep-joins", action="store_true", help="transition: keep the join points (--join-search 0)")
    args = ap.parse_args(argv)
    options = {"preset": args.preset, "model": args.model, "reference": args.reference, "endpoint": args.endpoint,
               "steps": args.steps, "seed": args.seed, "duration_s": args.duration, "strength": args.strength,
               "crossfade_s": args.crossfade, "join_search_s": 0.0 if args.keep_joins else args.join_search,
               "context_s": args.context, "timeout_s": args.timeout,
               "takes": args.takes, "snap": 1 if args.snap_bars else None}
    try:
        out = run(args.session_dir, args.name, args.task, track=args.track, marker=args.marker,
                  out_track=args.out_track, options=options)
    except (HeadlessError, ValueError, OSError, subprocess.TimeoutExpired) as e:
        sys.stderr.write(f"segue-ardour: {e}\n")
        return 1
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
