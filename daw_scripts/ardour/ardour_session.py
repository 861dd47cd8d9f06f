"""Headless audio import for Ardour 7 sessions: the step Ardour's Lua has no call for.

Ardour's GUI imports files with `Editor:do_import`; the headless tool
(`ardour7-lua`) has no import call. With the session closed, this helper does
what an import does: it converts the clip to the session rate, writes one mono
float WAV per channel into the session's `interchange/<name>/audiofiles/`
folder (as Ardour does for its own sources), and adds matching `<Source>` and
whole-file `<Region>` entries to the session XML. The Segue Lua script then
places that region on the timeline through Ardour's own API, as one undo step.

It can also put a region straight into a track's playlist (`--track/--at`),
which the tests use to build a session with an audio region to start from.
Ardour 7 stores times as `a<superclock>` with 282 240 000 ticks per second;
a region's position is the `@` part of `length="a<dur>@a<pos>"`. Checked on
Ardour 7.3 (Debian bookworm).

    python ardour_session.py import SESSION.ardour CLIP.wav --name NAME [--track T --at SAMPLES]
    prints the whole-file region's id on stdout
"""
from __future__ import annotations

import argparse
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import numpy as np

SUPERCLOCK_PER_SECOND = 282_240_000


def superclock(samples: int, sample_rate: int) -> int:
    """Samples at `sample_rate` -> Ardour's audio-time ticks (exact for 44.1/48/88.2/96/192 kHz)."""
    ticks = samples * SUPERCLOCK_PER_SECOND
    if ticks % sample_rate:
        raise ValueError(f"{samples} samples at {sample_rate} Hz is not a whole number of superclock ticks")
    return ticks // sample_rate


def read_clip(path: str, sample_rate: int) -> np.ndarray:
    """A clip as float32 (channels, samples) at the session's rate (high-quality resampling if needed)."""
    from pedalboard.io import AudioFile

    from engine.audio_io import resample  # the project's one resampler (length = round(N * ratio))

    with AudioFile(path) as f:
        src_rate = int(round(f.samplerate))
        audio = f.read(f.frames).astype(np.float32)
    return resample(audio, src_rate, sample_rate)


def _write_mono_float(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    from pedalboard.io import AudioFile

    tmp = path.with_name(path.name + ".part.wav")
    with AudioFile(str(tmp), "w", sample_rate, 1, bit_depth=32) as f:
        f.write(samples[None].astype(np.float32))
    os.replace(tmp, path)


class Session:
    """The XML of one Ardour session snapshot, with the few edits an import needs."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.tree = ET.parse(self.path)
        self.root = self.tree.getroot()
        self.sample_rate = int(self.root.get("sample-rate"))
        self.name = self.root.get("name")

    def next_id(self) -> str:
        """A fresh object id. The saved `id-counter` can lag behind ids already in the file (seen with
        a location added just before saving), so take the larger of it and every id in use, plus one."""
        if not hasattr(self, "_max_id"):
            used = [int(v) for el in self.root.iter() for k, v in el.attrib.items()
                    if (k == "id" or k.endswith("-id")) and v.isdigit()]
            self._max_id = max([int(self.root.get("id-counter")) - 1, *used])
        self._max_id += 1
        self.root.set("id-counter", str(self._max_id + 1))
        return str(self._max_id)

    def _child(self, tag: str) -> ET.Element:
        el = self.root.find(tag)
        if el is None:
            el = ET.SubElement(self.root, tag)
        return el

    def playlist_of(self, track: str) -> ET.Element:
        for route in self.root.iter("Route"):
            if route.get("name") == track:
                pid = route.get("audio-playlist")
                for pl in self.root.iter("Playlist"):
                    if pl.get("id") == pid:
                        return pl
                raise ValueError(f"track {track!r} has no audio playlist in {self.path}")
        names = [r.get("name") for r in self.root.iter("Route") if r.get("audio-playlist")]
        raise ValueError(f"no audio track named {track!r} in {self.path}; tracks: {', '.join(names)}")

    def add_sources(self, clip: np.ndarray, name: str) -> list[str]:
        """Write one mono source file per channel and register them; returns the source ids."""
        folder = self.path.parent / "interchange" / self.name / "audiofiles"
        folder.mkdir(parents=True, exist_ok=True)
        suffixes = ["%L", "%R"] if clip.shape[0] == 2 else [f"-{c}" for c in range(clip.shape[0])]
        sources = self._child("Sources")
        ids = []
        for ch, suffix in enumerate(suffixes):
            fname = f"{name}{suffix}.wav"
            if (folder / fname).exists():
                raise ValueError(f"a source named {fname} already exists in {folder}")
            _write_mono_float(folder / fname, clip[ch], self.sample_rate)
            sid = self.next_id()
            ET.SubElement(sources, "Source", {
                "name": fname, "type": "audio", "flags": "", "id": sid, "natural-position": "a0",
                "captured-for": "", "channel": "0", "origin": "", "gain": "1"})
            ids.append(sid)
        return ids

    def region_element(self, parent: ET.Element, name: str, source_ids: list[str], length: int,
                       position: int = 0, start: int = 0, whole_file: bool = False) -> str:
        sr = self.sample_rate
        rid = self.next_id()
        attrs = {
            "name": name, "muted": "0", "opaque": "1", "locked": "0", "video-locked": "0", "automatic": "0",
            "whole-file": "1" if whole_file else "0", "import": "1", "external": "0", "sync-marked": "0",
            "left-of-split": "0", "right-of-split": "0", "hidden": "0", "position-locked": "0",
            "valid-transients": "0", "start": f"a{superclock(start, sr)}",
            "length": f"a{superclock(length, sr)}@a{superclock(position, sr)}",
            "sync-position": "a0", "ancestral-start": "a0", "ancestral-length": "a0@a0", "stretch": "1",
            "shift": "1", "layering-index": "0", "tags": "", "contents": "0", "envelope-active": "0",
            "default-fade-in": "0", "default-fade-out": "0", "fade-in-active": "1", "fade-out-active": "1",
            "scale-amplitude": "1", "id": rid, "type": "audio", "first-edit": "nothing",
            "channels": str(len(source_ids))}
        for i, sid in enumerate(source_ids):
            attrs[f"source-{i}"] = sid
            attrs[f"master-source-{i}"] = sid
        ET.SubElement(parent, "Region", attrs)
        return rid

    def extend_session_range(self, end_sample: int) -> None:
        """Make the session range reach `end_sample` (export renders the session range only)."""
        locs = self._child("Locations")
        end = superclock(end_sample, self.sample_rate)
        for loc in locs.iter("Location"):
            if "IsSessionRange" in loc.get("flags", ""):
                old = int(loc.get("end").lstrip("a"))
                loc.set("end", f"a{max(old, end)}")
                return
        ET.SubElement(locs, "Location", {"id": self.next_id(), "name": "session", "start": "a0", "end": f"a{end}",
                                         "flags": "IsSessionRange", "locked": "0", "timestamp": "0", "cue": "0"})

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.tree.write(tmp, encoding="UTF-8", xml_declaration=True)
        os.replace(tmp, self.path)


def import_clip(session_file: str | os.PathLike, clip_path: str, name: str, *, track: Optional[str] = None,
                at: int = 0, start: int = 0, length: Optional[int] = None) -> str:
    """Import `clip_path` into the (closed) session as a whole-file region; optionally also place a
    region of it on `track` at sample `at` (source offset `start`, `length` samples). Returns the
    whole-file region's id."""
    s = Session(session_file)
    clip = read_clip(clip_path, s.sample_rate)
    if clip.shape[0] not in (1, 2):
        raise ValueError(f"{clip_path}: expected 1 or 2 channels, got {clip.shape[0]}")
    ids = s.add_sources(clip, name)
    n = clip.shape[1]
    whole = s.region_element(s._child("Regions"), name, ids, n, whole_file=True)
    if track is not None:
        length = n - start if length is None else length
        if start < 0 or length <= 0 or start + length > n:
            raise ValueError(f"region start {start} + length {length} does not fit the {n}-sample clip")
        s.region_element(s.playlist_of(track), f"{name}.1", ids, length, position=at, start=start)
        s.extend_session_range(at + length)
    s.save()
    return whole


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Import a clip into a closed Ardour 7 session (headless).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser("import", help="add CLIP as a whole-file region (and optionally place it on a track)")
    imp.add_argument("session", help="the session's .ardour file")
    imp.add_argument("clip", help="audio file (any rate; converted to the session rate)")
    imp.add_argument("--name", required=True, help="region/source base name (unique in the session)")
    imp.add_argument("--track", help="also place a region of it on this track")
    imp.add_argument("--at", type=int, default=0, help="timeline position in session samples")
    imp.add_argument("--start", type=int, default=0, help="offset into the clip in session samples")
    imp.add_argument("--length", type=int, help="region length in session samples (default: to the end)")
    args = ap.parse_args(argv)
    try:
        rid = import_clip(args.session, args.clip, args.name, track=args.track, at=args.at, start=args.start,
                          length=args.length)
    except (ValueError, OSError, ET.ParseError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    sys.stdout.write(rid + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
