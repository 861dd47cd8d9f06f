"""Shared test settings: one torch thread per process.

The suite runs on 2-core CI machines, and several tests start worker processes;
one thread each avoids oversubscription that slows everything down many times.
"""
import torch

torch.set_num_threads(1)
