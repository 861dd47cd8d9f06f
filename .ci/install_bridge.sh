#!/usr/bin/env bash
# Independent peers for the bridge interoperability tests: liblo's oscsend/oscdump and libzmq for a C client.
# Idempotent: installs only what is missing.
set -euo pipefail
need=()
command -v oscsend >/dev/null 2>&1 || need+=(liblo-tools)
[ -f /usr/include/zmq.h ] || need+=(libzmq3-dev)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${need[@]}"
fi
