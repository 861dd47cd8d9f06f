"""Ardour's editor action, run as a user runs it: the real Ardour 7 GUI under Xvfb.

A 48 kHz session with an audio region is opened in `ardour` (the "None (Dummy)" backend, seeded
in a throw-away HOME together with segue.lua as action script 1). The test draws a time range on
the region's track with the range tool (xdotool), triggers "Segue: Render Selection" through
Ardour's OSC control surface (`/access_action LuaAction/script-1`), answers the script's dialog
and lets the render go through a real daemon with the built-in model. Then it checks, in the
session Ardour saves: the clip lies on the "Segue" track at the sample the request implies; one
Ctrl+Z removes exactly that clip; Cancel in the progress window cancels the job in the daemon and
places nothing. A screenshot of the editor with the placed clip is kept (SEGUE_TEST_ARTIFACTS,
default: the test's temporary folder).

Nothing depends on a fixed screen layout: Xvfb runs at a size the test chooses (SCREEN, or
SEGUE_GUI_SCREEN=WxH), windows are found by title and measured with xdotool, the timeline's
position and scale are read off a screenshot (the region, of known time span, is the one wide
bright block in the editor), and the dialogs are answered with the keyboard.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import time
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from support.daw_support import DAW_SCRIPTS, ServeProcess

# The built-in engine's default infill is the retrieval prior alone: it finishes in well under a
# second, too soon to cancel by hand. A producer's own task preset that has the model polish the
# seams makes a render long enough (1000 steps) to press Cancel in.
SLOW_PRESET = "infill-polished"
SLOW_PRESET_TOML = f"""name = "{SLOW_PRESET}"
kind = "task"
task = "infill"
description = "The prior, with the model regenerating around its seams."

[settings]
refine_strength = 0.1
refine_span = "seams"
"""


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """One daemon for the module, allowed to read every test's files, that also sees a user preset folder."""
    root = tmp_path_factory.mktemp("serve")
    presets = root / "user-presets"
    presets.mkdir()
    (presets / f"{SLOW_PRESET}.toml").write_text(SLOW_PRESET_TOML)
    d = ServeProcess(root, allow_root=Path(str(tmp_path_factory.getbasetemp())),
                     extra_env={"SEGUE_PRESETS": str(presets)})
    yield d
    d.stop()

TOOLS = ("ardour", "ardour7-lua", "Xvfb", "xdotool", "xwd")
pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason="the Ardour GUI test needs ardour, Xvfb, xdotool and xwd; run .ci/install_daw.sh")
RATE = 48000
SCREEN = tuple(int(v) for v in os.environ.get("SEGUE_GUI_SCREEN", "1440x900").split("x"))
REGION_S = (2.0, 8.0)       # the Source region's span on the timeline (make_session)


@dataclass(frozen=True)
class Geometry:
    x: int
    y: int
    width: int
    height: int

    @property
    def centre(self) -> tuple[int, int]:
        return self.x + self.width // 2, self.y + self.height // 2


@dataclass(frozen=True)
class Timeline:
    """Where the editor draws time: x of 0 s and pixels per second, and the Source track's middle row."""

    x0: float
    px_per_s: float
    track_y: int

    def x(self, seconds: float) -> float:
        return self.x0 + seconds * self.px_per_s


def find_timeline(rgb: np.ndarray, span_s: tuple[float, float] = REGION_S) -> Timeline:
    """The timeline from a screenshot: regions are blocks of bright pixels (Ardour draws a region's
    body far lighter than the lanes, rulers and headers; grid lines are one pixel wide) at least
    40 px wide on many rows; the left edge of the first and the right edge of the last are span_s
    (the first region's start and the last one's end) on the timeline."""
    bright = rgb.astype(np.int16).mean(axis=2) > 160
    runs: dict[tuple[int, int], list[int]] = {}
    for y in range(bright.shape[0]):
        d = np.diff(np.r_[0, bright[y].astype(np.int8), 0])
        for a, b in zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]):
            if b - a >= 40:
                runs.setdefault((int(a), int(b)), []).append(y)
    assert runs, "no region found in the editor screenshot"
    blocks = {k: rows for k, rows in runs.items() if len(rows) >= 8}
    assert blocks, f"no region-sized block in the editor screenshot ({len(runs)} short ones)"
    a, b = min(k[0] for k in blocks), max(k[1] for k in blocks)
    rows = sorted(y for r in blocks.values() for y in r)
    px_per_s = (b - a) / (span_s[1] - span_s[0])
    return Timeline(a - span_s[0] * px_per_s, px_per_s, (rows[0] + rows[-1]) // 2)


def lua_long_string(text: str) -> str:
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[\n{text}]{'=' * level}]"


def seed_home(home: Path, script: Path) -> None:
    """A first-run-free Ardour profile: the Dummy backend (shown and autostarted) at RATE, and
    `script` registered as editor action 1 (ui_scripts holds the Lua state Ardour itself saves:
    slot ids are 1-based, the factory a chunk that returns factory(...))."""
    cfg = home / ".config" / "ardour7"
    cfg.mkdir(parents=True)
    (cfg / ".a7").touch()     # "been here before": no first-run wizard
    (cfg / "config").write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<Ardour>
  <Config>
    <Option name="try-autostart-engine" value="1"/>
    <Option name="hide-dummy-backend" value="0"/>
    <Option name="discover-plugins-on-start" value="0"/>
  </Config>
  <Extra><AudioMIDISetup><EngineStates>
    <State backend="None (Dummy)" driver="Normal Speed" device="Silence" input-device="" output-device=""
      sample-rate="{RATE}" buffer-size="1024" n-periods="0" input-latency="0" output-latency="0" lm-input=""
      lm-output="" active="1" use-buffered-io="0" midi-option="No MIDI I/O" lru="1"><MIDIDevices/></State>
  </EngineStates></AudioMIDISetup></Extra>
</Ardour>
""")
    src = script.read_text()
    chunk = "function ardour (_) end\n" + src + "\nreturn factory (...)\n"
    state = (f'scripts = {{}} scripts[1] = {{}} scripts[1]["n"] = "Segue: Render Selection" '
             f'scripts[1]["s"] = {lua_long_string(src)} scripts[1]["f"] = {lua_long_string(chunk)} '
             f'scripts[1]["a"] = {{}} ')
    b64 = base64.b64encode(state.encode()).decode()
    (cfg / "ui_scripts").write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<UIScripts><ActionScript '
                                    f'lua="Lua 5.3">{b64}</ActionScript><ActionHooks/></UIScripts>\n')


class Gui:
    """Xvfb + Ardour on a session; xdotool for input, xwd for screenshots, OSC for actions."""

    def __init__(self, session: Path, home: Path, env: dict, log: Path) -> None:
        self.session = session
        r, w = os.pipe()
        self.xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                                      "-nolisten", "tcp"], pass_fds=(w,), stderr=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r) as f:
            self.display = ":" + f.readline().strip()
        self.env = dict(env, HOME=str(home), DISPLAY=self.display)
        self._log = open(log, "w")
        self.ardour = subprocess.Popen(["ardour", "-n", "-a", str(session)], env=self.env, stdout=self._log,
                                       stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        for p in (self.ardour, self.xvfb):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        self._log.close()

    def xdo(self, *args: str) -> str:
        return subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=30).stdout

    def window(self, name: str, timeout_s: float = 60.0) -> Optional[Geometry]:
        """Position and size of the visible window whose title matches `name` (a regex), once it shows."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ids = self.xdo("search", "--onlyvisible", "--name", name).split()
            if ids:
                geo = dict(line.split("=") for line in self.xdo("getwindowgeometry", "--shell", ids[0]).split())
                return Geometry(int(geo["X"]), int(geo["Y"]), int(geo["WIDTH"]), int(geo["HEIGHT"]))
            assert self.ardour.poll() is None, "Ardour exited"
            time.sleep(0.2)
        return None

    def click(self, x: float, y: float) -> None:
        self.xdo("mousemove", str(int(x)), str(int(y)), "click", "1")

    def drag(self, x0: float, x1: float, y: float) -> None:
        self.xdo("mousemove", str(int(x0)), str(int(y)), "mousedown", "1", "mousemove", str(int((x0 + x1) / 2)),
                 str(int(y)), "sleep", "0.2", "mousemove", str(int(x1)), str(int(y)), "sleep", "0.2", "mouseup", "1")

    def key(self, *keys: str, into: Optional[Geometry] = None) -> None:
        """Keys to the window `into` (default: the editor): with no window manager, keyboard focus
        follows the pointer, so the pointer goes to the window's middle first (clamped to the screen)."""
        into = into or self.main
        x, y = into.centre
        self.xdo("mousemove", str(min(max(x, 0), SCREEN[0] - 1)), str(min(max(y, 0), SCREEN[1] - 1)))
        self.xdo("key", *keys)

    @property
    def main(self) -> Geometry:
        geo = self.window(r"^\*?song - Ardour$", 5)   # "*": unsaved changes
        assert geo, "the editor window is gone"
        return geo

    def timeline(self, path: Path, span_s: tuple[float, float] = REGION_S) -> Timeline:
        """The editor's timeline as it is drawn now (screenshot kept at `path`); `span_s`: from the
        first region's start to the last one's end."""
        self.screenshot(path)
        return find_timeline(read_png(path), span_s)

    def action(self, name: str) -> None:
        from pythonosc.udp_client import SimpleUDPClient
        SimpleUDPClient("127.0.0.1", 3819).send_message("/access_action", name)

    def screenshot(self, path: Path) -> Path:
        """The whole screen as PNG (xwd's 24/32-bit TrueColor dump, converted here)."""
        raw = subprocess.run(["xwd", "-root", "-silent", "-display", self.display], capture_output=True, check=True,
                             timeout=30).stdout
        h = struct.unpack(">25I", raw[:100])
        header, width, height, byte_order, bpp, bpl, ncolors = h[0], h[4], h[5], h[7], h[11], h[12], h[19]
        off = header + ncolors * 12
        px = np.frombuffer(raw[off:off + bpl * height], np.uint8).reshape(height, bpl)[:, :width * bpp // 8]
        px = px.reshape(height, width, bpp // 8)
        rgb = np.ascontiguousarray(px[:, :, [2, 1, 0]] if byte_order == 0 else px[:, :, [1, 2, 3]])
        path.write_bytes(png(rgb))
        return path

    def save_and_read(self) -> dict[str, list[dict]]:
        """Ctrl+S, then the regions of each playlist in the saved session (position and length in samples)."""
        path = self.session / f"{self.session.name}.ardour"
        before = path.stat().st_mtime_ns
        self.key("ctrl+s")
        deadline = time.monotonic() + 20
        while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        out: dict[str, list[dict]] = {}
        for pl in ET.parse(path).getroot().iter("Playlist"):
            regions = []
            for r in pl.iter("Region"):
                length, _, position = r.get("length", "").partition("@")
                regions.append({"name": r.get("name"), "position": int(position[1:]) * RATE // 282240000,
                                "length": int(length[1:]) * RATE // 282240000,
                                "start": int(r.get("start", "a0")[1:]) * RATE // 282240000})
            out[pl.get("name")] = regions
        return out


def read_png(path: Path) -> np.ndarray:
    """The RGB pixels (h, w, 3) of a PNG written by `png` (8-bit RGB, filter 0 on every row)."""
    data, pos, idat = path.read_bytes(), 8, b""
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    return np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)[:, 1:].reshape(h, w, 3)


def png(rgb: np.ndarray) -> bytes:
    """An RGB image (h, w, 3) uint8 as PNG bytes (no imaging library needed)."""
    h, w, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def wait_for(fn, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


def job_states(serve) -> list[tuple[str, Optional[str]]]:
    with sqlite3.connect(serve.root / "state" / "jobs.sqlite3") as c:
        return c.execute("SELECT state, error_code FROM jobs ORDER BY accepted_at").fetchall()


def open_gui(session: Path, tmp_path: Path, serve):
    """Ardour's GUI on `session` (its OSC surface switched on), once the editor is up."""
    f = session / "song.ardour"
    f.write_text(f.read_text().replace('<Protocol name="Open Sound Control (OSC)" active="0"',
                                       '<Protocol name="Open Sound Control (OSC)" active="1"'))
    seed_home(tmp_path / "home", DAW_SCRIPTS / "ardour" / "segue.lua")
    g = Gui(session, tmp_path / "home", serve.env, tmp_path / "ardour.log")
    try:
        assert g.window("^song - Ardour$", 120), (tmp_path / "ardour.log").read_text()[-3000:]
        time.sleep(3)                                # let the editor finish its first layout
        yield g
    finally:
        g.stop()


@pytest.fixture
def gui(tmp_path, serve):
    import sys
    sys.path.insert(0, str(DAW_SCRIPTS / "ardour"))
    from test_daw_ardour import make_session
    session, _ = make_session(tmp_path, (4 * RATE, 5 * RATE))       # region [2 s, 8 s) on track Source
    yield from open_gui(session, tmp_path, serve)


@pytest.fixture
def loop_gui(tmp_path, serve):
    import sys
    sys.path.insert(0, str(DAW_SCRIPTS / "ardour"))
    from test_daw_ardour import make_loop_session
    session = make_loop_session(tmp_path, "moved")    # A [0.5 s, 8.5 s) and B [6.5 s, 14.5 s) on track Source
    yield from open_gui(session, tmp_path, serve)


def run_action(gui: Gui, steps: int, tl: Timeline, span_s: tuple[float, float] = (4.0, 5.5),
               preset: str = "") -> Geometry:
    """Range `span_s` on the Source track, trigger the action, set the preset and steps, OK; returns the dialog.

    The dialog opens with the Preset entry focused (the Task dropdown takes no keyboard focus); Tab
    moves to Steps, typing replaces its text; two Shift+Tabs go back past Preset and wrap round to
    the last button, OK, which Space presses. (Return in a field does not answer this dialog.)"""
    gui.key("r")                                     # the range tool
    gui.drag(tl.x(span_s[0]), tl.x(span_s[1]), tl.track_y)
    gui.action("LuaAction/script-1")
    dialog = gui.window("^Segue$", 30)
    assert dialog, "the script's dialog did not open"
    if preset:
        gui.xdo("type", preset)
    gui.key("Tab", into=dialog)
    gui.xdo("key", "ctrl+a")
    gui.xdo("type", str(steps))
    gui.xdo("key", "shift+Tab", "shift+Tab", "space")
    return dialog


def test_the_editor_action_renders_places_undoes_and_cancels_in_the_real_gui(gui, serve, tmp_path):
    art = Path(os.environ.get("SEGUE_TEST_ARTIFACTS", tmp_path))
    art.mkdir(parents=True, exist_ok=True)
    tl = gui.timeline(art / "ardour-gui-start.png")
    # the region [2 s, 8 s) at Ardour's default zoom: a sanity check on the reading, not a layout constant
    assert 10 < tl.px_per_s < 100 and 0 < tl.x0 < SCREEN[0] and 0 < tl.track_y < SCREEN[1], tl
    run_action(gui, steps=8, tl=tl)
    try:
        assert wait_for(lambda: [s for s in job_states(serve) if s[0] not in ("queued", "running")], 240,
                        "the render to finish") == [("done", None)]
        wait_for(lambda: gui.window("^Segue infill$", 0.5) is None, 60, "the progress window to close")
        time.sleep(2)                                 # do_import and the placement run after the client returns
    except AssertionError:
        gui.screenshot(art / "ardour-gui-failed.png")
        raise
    regions = gui.save_and_read()
    (clip,) = regions["Segue"]
    shot = gui.screenshot(art / "ardour-gui-placed.png")
    assert shot.stat().st_size > 10_000

    # where it belongs: the exported window starts at the region start (2 s: 4 s of context clamped), so
    # the clip goes to 2 s + the request's start_s, in session samples
    with sqlite3.connect(serve.root / "state" / "jobs.sqlite3") as c:
        (result,) = [json.loads(r) for (r,) in c.execute("SELECT result FROM jobs WHERE state = 'done'")]
    side = json.loads(Path(result["sidecar_path"]).read_text())
    assert side["request"]["model"] == "builtin" and side["request"]["steps"] == 8
    start_s, duration_s = side["request"]["start_s"], side["duration_s"]
    assert 1.8 < start_s < 2.3 and 1.2 < duration_s < 1.8       # the range drawn: about 4.0-5.5 s
    assert abs(clip["position"] - (2 * RATE + round(start_s * RATE))) <= 1
    assert abs(clip["length"] - duration_s * RATE) <= 2           # converted 44.1 -> 48 kHz on import
    assert regions["Source"] == [{"name": "src.1", "position": 2 * RATE, "length": 6 * RATE, "start": RATE // 2}]

    # one Ctrl+Z removes exactly that clip
    gui.key("ctrl+z")
    after = gui.save_and_read()
    assert after["Segue"] == [] and after["Source"] == regions["Source"]

    # Cancel in the progress window: the daemon cancels the job, nothing is placed
    done_before = len(job_states(serve))
    run_action(gui, steps=1000, tl=tl, preset=SLOW_PRESET)
    assert gui.window("^Segue infill$", 60), "no progress window"
    # the window is drawn (and its Cancel button can take a click) once progress lines arrive
    wait_for(lambda: ("running", None) in job_states(serve)[done_before:], 60, "the job to start")
    time.sleep(3.0)
    progress = gui.window("^Segue infill$", 5)
    gui.screenshot(art / "ardour-gui-progress.png")
    gui.key("Return", into=progress)                 # its one button, Cancel, has the focus
    states = wait_for(lambda: [s for s in job_states(serve)[done_before:] if s[0] != "running" and s[0] != "queued"],
                      60, "the job to end")
    assert states == [("cancelled", "cancelled")]
    time.sleep(2)
    assert gui.window("^Segue infill$", 1) is None
    assert gui.save_and_read()["Segue"] == []


def test_a_transition_from_the_editor_trims_a_and_moves_b_to_where_the_clips_b_material_ends(loop_gui, serve,
                                                                                             tmp_path):
    """Two overlapping drum loops whose joins the engine moves: the range over the overlap selects both."""
    from support.transition_loops import b_at_clip_end_s, engine_moved

    gui = loop_gui
    art = Path(os.environ.get("SEGUE_TEST_ARTIFACTS", tmp_path))
    art.mkdir(parents=True, exist_ok=True)
    tl = gui.timeline(art / "ardour-gui-transition-start.png", span_s=(0.5, 14.5))
    before = len(job_states(serve))                        # the daemon serves the whole module
    run_action(gui, steps=4, tl=tl, span_s=(7.0, 8.0))     # the dialog's task defaults to transition
    try:
        assert wait_for(lambda: [s for s in job_states(serve)[before:] if s[0] not in ("queued", "running")], 240,
                        "the render to finish") == [("done", None)]
        wait_for(lambda: gui.window("^Segue transition$", 0.5) is None, 60, "the progress window to close")
        time.sleep(2)
    except AssertionError:
        gui.screenshot(art / "ardour-gui-transition-failed.png")
        raise
    regions = gui.save_and_read()
    gui.screenshot(art / "ardour-gui-transition-placed.png")
    with sqlite3.connect(serve.root / "state" / "jobs.sqlite3") as c:
        result = json.loads([r for (r,) in c.execute("SELECT result FROM jobs ORDER BY accepted_at")][before])
    side = json.loads(Path(result["sidecar_path"]).read_text())
    assert side["request"]["task"] == "transition" and engine_moved(side, 6.5, 1.0)
    (clip,) = regions["Segue"]
    x0, x1, fade = clip["position"], clip["position"] + clip["length"], int(0.01 * RATE)
    assert abs(x0 - (RATE + round(side["offset_s"] * RATE))) <= 1          # A's export starts at 1.0 s
    a, b = sorted(regions["Source"], key=lambda r: r["name"])
    assert (a["name"], a["position"], a["position"] + a["length"]) == ("a.1", RATE // 2, x0 + fade)
    # B: starts just before the clip's end and there plays b.wav where the clip's B material ended
    # (B's export started at its region start, 6.5 s = b.wav 0.5 s)
    assert b["name"] == "b.1" and b["position"] == x1 - fade
    expected = RATE // 2 + b_at_clip_end_s(side) * RATE
    assert abs(b["start"] + fade - expected) < 0.002 * RATE, (b["start"] + fade, expected)
    # one Ctrl+Z takes back the clip and both trims
    gui.key("ctrl+z")
    after = gui.save_and_read()
    assert after["Segue"] == []
    assert sorted(after["Source"], key=lambda r: r["name"]) == [
        {"name": "a.1", "position": RATE // 2, "length": 8 * RATE, "start": 0},
        {"name": "b.1", "position": int(6.5 * RATE), "length": 8 * RATE, "start": RATE // 2}]
