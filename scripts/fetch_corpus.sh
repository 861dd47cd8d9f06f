#!/usr/bin/env bash
# Fetch the freely licensed music used to train the built-in model.
# Only Debian's archive is contacted (apt-get download); packages are unpacked
# with dpkg -x into data/debs/<pkg>/ and never installed system-wide.
# Usage: scripts/fetch_corpus.sh [DATA_DIR]   (default: data/)
set -euo pipefail
DATA_DIR="${1:-data}"
PKGS=(wesnoth-1.16-music hyperrogue-music asc-music hedgewars-data supertuxkart-data)
mkdir -p "$DATA_DIR/debs" "$DATA_DIR/raw"
cd "$DATA_DIR/debs"
for pkg in "${PKGS[@]}"; do
  if [ -f "../raw/$pkg.done" ]; then
    echo "already unpacked: $pkg"; continue
  fi
  if ! ls "${pkg}"_*.deb >/dev/null 2>&1; then
    apt-get download "$pkg"
  fi
  deb=$(ls "${pkg}"_*.deb | head -n1)
  rm -rf "../raw/$pkg"; mkdir -p "../raw/$pkg"
  dpkg -x "$deb" "../raw/$pkg"
  touch "../raw/$pkg.done"
  echo "unpacked: $pkg ($deb)"
done
