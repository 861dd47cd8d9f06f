"""A STAND-IN for AbletonOSC inside Ableton Live (Live cannot run here).

Not Live. A UDP OSC server answering exactly the addresses `segue_live.py` uses, with AbletonOSC's
reply conventions (getters answer on the same address with the object's indices first, e.g.
`/live/clip/get/file_path t s` -> `(t, s, path)`; `/live/view/get/selected_clip` -> `(track, scene)`
as in AbletonOSC's view.py; unknown addresses -> `/live/error msg`). `create_audio_clip=True` adds
`/live/clip_slot/create_audio_clip t s path` (Live 12.0.5's `ClipSlot.create_audio_clip`, which
upstream AbletonOSC does not expose; forks do). `markers_rw=True` answers `/live/clip/set/start_marker`
and `end_marker` (the LOM's Clip.start_marker/end_marker are writable; setters get no reply).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient


@dataclass
class Clip:
    file_path: str
    start_marker: float
    end_marker: float
    warping: bool = False
    is_audio_clip: bool = True
    name: str = ""


@dataclass
class LiveSet:
    clips: dict[tuple[int, int], Clip] = field(default_factory=dict)
    selected: tuple[int, int] = (0, 0)
    num_scenes: int = 4
    create_audio_clip: bool = True
    tempo: float = 120.0            # Song.tempo: quarter notes per minute
    signature_numerator: int = 4
    signature_denominator: int = 4
    markers_rw: bool = True         # /live/clip/set/start_marker and end_marker (Clip.start_marker is rw in the LOM)
    log: list[tuple] = field(default_factory=list)


class StandInAbletonOSC:
    def __init__(self, live: LiveSet, reply_port: int) -> None:
        self.live = live
        self.reply = SimpleUDPClient("127.0.0.1", reply_port)
        disp = Dispatcher()
        disp.set_default_handler(self._handle)
        self.server = ThreadingOSCUDPServer(("127.0.0.1", 0), disp)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _send(self, address: str, *args: Any) -> None:
        self.reply.send_message(address, list(args))

    def _handle(self, address: str, *args: Any) -> None:
        live = self.live
        live.log.append((address, *args))
        if address == "/live/view/get/selected_clip":
            return self._send(address, *live.selected)
        if address == "/live/song/get/num_scenes":
            return self._send(address, live.num_scenes)
        if address in ("/live/song/get/tempo", "/live/song/get/signature_numerator",
                       "/live/song/get/signature_denominator"):
            return self._send(address, getattr(live, address.rsplit("/", 1)[1]))
        if address == "/live/song/create_scene":
            live.num_scenes += 1
            return None
        if address == "/live/clip_slot/get/has_clip":
            t, s = int(args[0]), int(args[1])
            return self._send(address, t, s, (t, s) in live.clips)
        if address == "/live/clip_slot/create_audio_clip" and live.create_audio_clip:
            t, s, path = int(args[0]), int(args[1]), str(args[2])
            from pedalboard.io import AudioFile

            with AudioFile(path) as f:
                live.clips[(t, s)] = Clip(path, 0.0, f.frames / f.samplerate)
            return None
        if address.startswith("/live/clip/get/"):
            t, s = int(args[0]), int(args[1])
            clip = live.clips.get((t, s))
            if clip is None:
                return self._send("/live/error", f"no clip in slot {t} {s}")
            return self._send(address, t, s, getattr(clip, address.rsplit("/", 1)[1]))
        if address in ("/live/clip/set/start_marker", "/live/clip/set/end_marker") and live.markers_rw:
            clip = live.clips[(int(args[0]), int(args[1]))]
            value = float(args[2])
            start, end = (value, clip.end_marker) if address.endswith("start_marker") else (clip.start_marker, value)
            if not start < end:   # Live refuses a start marker at or after the end marker (and vice versa)
                return self._send("/live/error", f"Error handling OSC message: invalid marker {value}")
            clip.start_marker, clip.end_marker = start, end
            return None
        if address == "/live/clip/set/name":
            live.clips[(int(args[0]), int(args[1]))].name = str(args[2])
            return None
        return self._send("/live/error", f"Unknown OSC address: {address}")
