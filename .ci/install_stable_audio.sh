#!/usr/bin/env bash
# Optional extra for the Stable Audio backends and their tests (tests/test_stable_audio*.py).
# Idempotent. torch is pinned on the same line so pip can never swap in another (CUDA) build.
set -euo pipefail
python -m pip install --no-input "torch==2.13.0" "diffusers>=0.42" "transformers>=4.40" sentencepiece torchsde
