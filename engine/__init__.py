"""Segue engine: guided diffusion sampling on 44.1 kHz stereo audio."""
__version__ = "0.1.0"
