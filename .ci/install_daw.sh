#!/usr/bin/env bash
# Real DAWs for the DAW end-to-end tests (tests/test_daw_ardour.py, tests/test_daw_audacity.py) and
# Lua 5.4 for the REAPER Lua script (tests/test_daw_reaper.py, via the `lupa` wheel).
#   ardour  (~12 MB download; headless ardour7-lua / ardour7-export, "None (Dummy)" backend)
#   audacity + xvfb (Audacity 3.2 with mod-script-pipe, run under a virtual X server)
#   xdotool + x11-apps (the Ardour GUI test: mouse/keyboard input and xwd screenshots under Xvfb)
# About 33 MB to download, 330 MB installed, ~1 min on a CI runner. Idempotent: installs only what is missing.
set -euo pipefail
need=()
command -v ardour7-lua >/dev/null 2>&1 || need+=(ardour)
command -v audacity >/dev/null 2>&1 || need+=(audacity)
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
command -v xdotool >/dev/null 2>&1 || need+=(xdotool)     # drives Ardour's GUI (tests/test_daw_ardour_gui.py)
command -v xwd >/dev/null 2>&1 || need+=(x11-apps)        # xwd: screenshots of the virtual display
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${need[@]}"
fi
python -c "import lupa.lua54" >/dev/null 2>&1 || python -m pip install --quiet "lupa>=2.0"
