"""Train the built-in model: v-prediction on the cosine schedule over the spectral transform.

Run: python -m engine.training.train --config cpu --out runs/cpu [--resume] [--max-minutes M]
     python -m engine.training.train --out runs/cpu --export-only --export-to engine/models/weights

Every step draws its crops and noise from a generator seeded by (seed, step), so a
resumed run sees exactly the batches an uninterrupted run would. Checkpoints are
written atomically every `ckpt_every_s` seconds and at the end; the loss goes to
stdout and `OUT/log.csv`; the EMA weights are exported to safetensors + JSON.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..models.builtin_net import NetConfig, SpectralUNet
from ..models.spectral import SAMPLE_RATE, SpectralTransform
from .synth import synth_music


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run (stored in each checkpoint)."""

    name: str
    net: NetConfig
    n_fft: int = 1024
    hop: int = 512
    power: float = 0.5
    data: str = "corpus"  # "corpus" (data/corpus from engine.training.corpus) or "synth"
    batch: int = 8
    crop_frames: int = 256
    lr: float = 3e-4
    warmup_steps: int = 200
    max_steps: int = 100_000
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    gain_db_range: float = 6.0
    ckpt_every_s: float = 240.0
    eval_every_steps: int = 250
    eval_items: int = 16
    scale_items: int = 256
    threads: int = 1
    device: str = "cpu"
    seed: int = 0
    # The refiner's job (engine/prior): training t ~ U(t_min, t_max), the range the tasks re-noise to.
    t_min: float = 0.0
    t_max: float = 1.0
    # Robustness to what users bring: this share of crops band-limited at a random 6-18 kHz
    # (old MP3s, 22 kHz sources, OGG cut-offs), so empty bands stay empty.
    bandlimit_prob: float = 0.0
    # Start from these weights (a folder with builtin.safetensors + builtin.json) instead of random ones.
    init_from: str = ""


CONFIGS: dict[str, TrainConfig] = {
    # What the shipped weights were trained with: ~1 h on two shared CPU cores.
    "cpu": TrainConfig(name="cpu", net=NetConfig(power_features=True), max_steps=5000, threads=1),
    # A real GPU run: the same network, bigger batches and longer crops, many more steps.
    "gpu": TrainConfig(name="gpu", net=NetConfig(power_features=True), batch=48, crop_frames=512, lr=2e-4,
                       warmup_steps=1000, max_steps=300_000, ckpt_every_s=600.0,
                       eval_every_steps=2000, eval_items=64, device="cuda", threads=4),
    # Fine-tune the shipped weights as the retrieval prior's refiner: low t only, wider levels,
    # band-limited inputs. `--max-minutes` bounds a CPU run; the lr decays over max_steps.
    "refiner": TrainConfig(name="refiner", net=NetConfig(power_features=True), lr=1e-4, warmup_steps=20,
                           max_steps=1500, t_min=0.0, t_max=0.45, gain_db_range=12.0, bandlimit_prob=0.3,
                           init_from="engine/models/weights", eval_every_steps=250, threads=1),
    # A minute or two on CPU on synthetic audio: proves training runs, resumes and learns.
    "tiny": TrainConfig(name="tiny", net=NetConfig(widths=(32, 32, 48), blocks=(1, 1, 1), emb_dim=32, groups=8,
                                                                power_features=True),
                        data="synth", batch=4, crop_frames=64, lr=2e-3, warmup_steps=10, max_steps=200,
                        ema_decay=0.9, ckpt_every_s=1e9, eval_every_steps=1_000_000, eval_items=8,
                        scale_items=32),
}


# ---------------------------------------------------------------- data

def band_limit(audio: np.ndarray, cutoff_hz: float, rate: int = 44100) -> np.ndarray:
    """An ideal low-pass (FFT brick wall) of (2, n) audio: what a band-limited source looks like."""
    spec = np.fft.rfft(audio, axis=-1)
    freqs = np.fft.rfftfreq(audio.shape[-1], 1.0 / rate)
    spec[:, freqs > cutoff_hz] = 0
    return np.fft.irfft(spec, audio.shape[-1], axis=-1).astype(np.float32)


class CropSource:
    """Random crops of training or held-out audio as (B, 2, samples) float tensors."""

    def __init__(self, cfg: TrainConfig, split: str, data_dir: Path) -> None:
        self.cfg = cfg
        self.samples = (cfg.crop_frames - 1) * cfg.hop
        self.pcm = None
        if cfg.data == "corpus":
            from .corpus import load_index, load_split

            corpus_dir = data_dir / "corpus"
            if not (corpus_dir / "index.json").exists():
                raise FileNotFoundError(f"{corpus_dir}/index.json missing: run scripts/fetch_corpus.sh "
                                        "and python -m engine.training.corpus --out data")
            tracks = [t for t in load_index(corpus_dir) if t.split == split and t.frames > self.samples]
            self.pcm = load_split(corpus_dir, split)
            self.starts = np.array([t.offset for t in tracks])
            self.spans = np.array([t.frames - self.samples for t in tracks], dtype=np.float64)
            self.weights = self.spans / self.spans.sum()
        elif cfg.data != "synth":
            raise ValueError(f"unknown data kind {cfg.data!r}")

    def batch(self, rng: np.random.Generator, n: int, *, augment: bool) -> torch.Tensor:
        out = np.empty((n, 2, self.samples), np.float32)
        for i in range(n):
            out[i] = self._one(rng)
        if augment:
            gains = 10 ** (rng.uniform(-self.cfg.gain_db_range, self.cfg.gain_db_range, (n, 1, 1)) / 20)
            out *= gains.astype(np.float32)
            swap = rng.random(n) < 0.5
            out[swap] = out[swap][:, ::-1]
            for i in np.nonzero(rng.random(n) < self.cfg.bandlimit_prob)[0]:
                out[i] = band_limit(out[i], rng.uniform(6000.0, 18000.0))
        return torch.from_numpy(out)

    def _one(self, rng: np.random.Generator) -> np.ndarray:
        if self.pcm is None:
            return synth_music(self.samples, rng)
        for _ in range(8):  # skip near-silent crops (fade-outs, the "silence" track)
            k = rng.choice(len(self.starts), p=self.weights)
            pos = self.starts[k] + int(rng.integers(0, int(self.spans[k]) + 1))
            crop = np.asarray(self.pcm[pos:pos + self.samples], dtype=np.float32).T / 32768.0
            if np.sqrt(np.mean(crop ** 2)) > 1e-3:
                break
        return crop


def estimate_bin_scale(cfg: TrainConfig, source: CropSource, seed: int) -> torch.Tensor:
    """RMS of each bin's real/imag parts after compression, so latents have unit variance."""
    plain = SpectralTransform(n_fft=cfg.n_fft, hop=cfg.hop, power=cfg.power)
    rng = np.random.default_rng([seed, 999_999])
    acc = torch.zeros(plain.bins, dtype=torch.float64)
    count = 0
    for _ in range(0, cfg.scale_items, 16):
        spec = plain.compressed_stft(source.batch(rng, 16, augment=False))
        acc += (spec.abs() ** 2).double().sum(dim=(0, 1, 3)) / 2
        count += spec.shape[0] * spec.shape[1] * spec.shape[3]
    rms = (acc / count).sqrt().float()
    # A floor keeps bins that are almost empty in the corpus (above the codecs' low-pass)
    # from being blown up into loud noise.
    return rms.clamp_min(1e-2 * float(rms.median()))


# ---------------------------------------------------------------- training

def v_loss(net: torch.nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error of v = a_t e - s_t x0 on the cosine schedule."""
    a = torch.cos(t * math.pi / 2)[:, None, None]
    s = torch.sin(t * math.pi / 2)[:, None, None]
    x_t = a * x0 + s * noise
    v = a * noise - s * x0
    return torch.mean((net(x_t, t) - v) ** 2)


def _step_rng(seed: int, step: int, stream: int) -> tuple[np.random.Generator, torch.Generator]:
    np_rng = np.random.default_rng([seed, step, stream])
    gen = torch.Generator().manual_seed(int(np_rng.integers(0, 2 ** 62)))
    return np_rng, gen


class Trainer:
    def __init__(self, cfg: TrainConfig, out: Path, data_dir: Path) -> None:
        self.cfg, self.out = cfg, out
        self.device = torch.device(cfg.device)
        self.transform: SpectralTransform | None = None
        self.train_src = CropSource(cfg, "train", data_dir)
        self.eval_src = CropSource(cfg, "test", data_dir)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # the same initial weights for every run of a config
            self.net = SpectralUNet(cfg.net).to(self.device)
        if cfg.init_from:
            self._init_from(Path(cfg.init_from))
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=0.01)
        self.step = 0
        self.best_eval = float("inf")

    def _init_from(self, folder: Path) -> None:
        """Load exported weights (fp16 safetensors) and their bin scale as the starting point."""
        from safetensors.torch import load_file

        tensors = load_file(str(folder / "builtin.safetensors"))
        self.net.load_state_dict({k[len("net."):]: v.float() for k, v in tensors.items() if k.startswith("net.")})
        self._set_transform(tensors["transform.bin_scale"].float())

    # -- state
    def state(self) -> dict:
        return {"config": _config_dict(self.cfg), "step": self.step, "net": self.net.state_dict(),
                "ema": self.ema.state_dict(), "opt": self.opt.state_dict(), "best_eval": self.best_eval,
                "bin_scale": self.transform.bin_scale.cpu()}

    def save(self) -> None:
        tmp = self.out / "ckpt.pt.tmp"
        torch.save(self.state(), tmp)
        os.replace(tmp, self.out / "ckpt.pt")

    def load(self, path: Path) -> None:
        st = torch.load(path, map_location=self.device, weights_only=False)
        self.net.load_state_dict(st["net"])
        self.ema.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["opt"])
        self.step = int(st["step"])
        self.best_eval = float(st.get("best_eval", float("inf")))
        self._set_transform(st["bin_scale"])

    def _set_transform(self, bin_scale: torch.Tensor) -> None:
        c = self.cfg
        self.transform = SpectralTransform(n_fft=c.n_fft, hop=c.hop, power=c.power,
                                           bin_scale=bin_scale).to(self.device)

    # -- loop
    def lr_at(self, step: int) -> float:
        c = self.cfg
        warm = min(1.0, (step + 1) / max(1, c.warmup_steps))
        progress = min(1.0, step / max(1, c.max_steps))
        return c.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    def train_step(self) -> float:
        c = self.cfg
        rng, gen = _step_rng(c.seed, self.step, 0)
        audio = self.train_src.batch(rng, c.batch, augment=True).to(self.device)
        with torch.no_grad():
            x0 = self.transform.encode(audio)
        t = (c.t_min + (c.t_max - c.t_min) * torch.rand(c.batch, generator=gen)).to(self.device)
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = v_loss(self.net, x0, t, noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), c.grad_clip)
        self.opt.step()
        decay = min(c.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                pe.lerp_(p, 1 - decay)
        self.step += 1
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, net: torch.nn.Module) -> float:
        """v-loss on a fixed held-out batch at fixed noise levels (same every call)."""
        c = self.cfg
        rng, gen = _step_rng(c.seed, 2 ** 31, 1)
        audio = self.eval_src.batch(rng, c.eval_items, augment=False).to(self.device)
        x0 = self.transform.encode(audio)
        t = torch.linspace(max(0.05, c.t_min), min(0.95, c.t_max), c.eval_items).to(self.device)
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        losses = [float(v_loss(net, x0[i:i + 4], t[i:i + 4], noise[i:i + 4])) for i in range(0, c.eval_items, 4)]
        return float(np.mean(losses))

    def run(self, *, max_minutes: float | None, stop_at: int | None = None, log_every: int = 10) -> None:
        """Train until max_steps, `stop_at` (a pause that keeps the schedule) or the time limit."""
        c = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if self.transform is None:
            self._set_transform(estimate_bin_scale(c, self.train_src, c.seed))
        log_path = self.out / "log.csv"
        new_log = not log_path.exists()
        t_start = time.time()
        last_ckpt = t_start
        deadline = None if max_minutes is None else t_start + 60 * max_minutes
        with open(log_path, "a", newline="") as fh:
            log = csv.writer(fh)
            if new_log:
                log.writerow(["step", "wall_s", "loss", "lr", "eval_loss", "eval_ema_loss"])
            if self.step == 0:
                self._log_eval(log, time.time() - t_start, fh)
            running = []
            last = c.max_steps if stop_at is None else min(stop_at, c.max_steps)
            while self.step < last and (deadline is None or time.time() < deadline):
                running.append(self.train_step())
                if self.step % log_every == 0:
                    loss = float(np.mean(running))
                    running = []
                    log.writerow([self.step, round(time.time() - t_start, 1), f"{loss:.5f}",
                                  f"{self.lr_at(self.step):.2e}", "", ""])
                    fh.flush()
                    print(f"step {self.step} loss {loss:.4f} {time.time() - t_start:.0f}s", flush=True)
                if self.step % c.eval_every_steps == 0:
                    self._log_eval(log, time.time() - t_start, fh)
                if time.time() - last_ckpt > c.ckpt_every_s:
                    self.save()
                    last_ckpt = time.time()
            self._log_eval(log, time.time() - t_start, fh)
        self.save()

    def _log_eval(self, log, wall: float, fh) -> None:
        ev, ev_ema = self.evaluate(self.net), self.evaluate(self.ema)
        log.writerow([self.step, round(wall, 1), "", "", f"{ev:.5f}", f"{ev_ema:.5f}"])
        fh.flush()
        print(f"eval step {self.step}: held-out v-loss {ev:.4f} (ema {ev_ema:.4f})", flush=True)
        if ev_ema < self.best_eval and self.step > 0:
            self.best_eval = ev_ema
            export(self.ema, self.transform, self.cfg, self.out / "best", step=self.step,
                   extra={"eval_ema_loss": ev_ema})


# ---------------------------------------------------------------- export

def _config_dict(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d["net"] = cfg.net.to_dict()
    return d


def config_from_dict(d: dict) -> TrainConfig:
    d = dict(d)
    d["net"] = NetConfig.from_dict(d["net"])
    return TrainConfig(**d)


def export(net: torch.nn.Module, transform: SpectralTransform, cfg: TrainConfig, out_dir: Path, *,
           step: int, extra: dict | None = None, name: str = "builtin") -> Path:
    """Write NAME.safetensors (fp16 network, fp32 bin scale) and NAME.json (config)."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.detach().cpu().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    tensors["transform.bin_scale"] = transform.bin_scale.detach().cpu().float().contiguous()
    meta = {
        "format": "segue-builtin-v1",
        "sample_rate": SAMPLE_RATE,
        "net": cfg.net.to_dict(),
        "transform": {"n_fft": cfg.n_fft, "hop": cfg.hop, "power": cfg.power},
        "sigma_data": 1.0,
        "prediction": "v",
        "schedule": "cosine",
        "training": {"config": cfg.name, "step": step, "batch": cfg.batch, "crop_frames": cfg.crop_frames,
                     **(extra or {})},
    }
    tmp = out_dir / f"{name}.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.chmod(tmp, 0o644)  # safetensors writes 0600; installed weights must be readable by all
    os.replace(tmp, out_dir / f"{name}.safetensors")
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir / f"{name}.safetensors"


def export_checkpoint(run_dir: Path, dest: Path, *, which: str = "ema") -> Path:
    """Export the EMA weights of run_dir/ckpt.pt, or copy run_dir/best/ (which='best')."""
    if which == "best":
        import shutil

        dest.mkdir(parents=True, exist_ok=True)
        for suffix in (".safetensors", ".json"):
            shutil.copyfile(run_dir / "best" / f"builtin{suffix}", dest / f"builtin{suffix}")
        return dest / "builtin.safetensors"
    st = torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=False)
    cfg = config_from_dict(st["config"])
    net = SpectralUNet(cfg.net)
    net.load_state_dict(st["ema"])
    transform = SpectralTransform(n_fft=cfg.n_fft, hop=cfg.hop, power=cfg.power, bin_scale=st["bin_scale"])
    return export(net, transform, cfg, dest, step=int(st["step"]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the built-in model (see module docstring).")
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this long")
    p.add_argument("--max-steps", type=int, default=None, help="override the config's step count")
    p.add_argument("--stop-at", type=int, default=None,
                   help="pause (checkpoint and exit) at this step without changing the lr schedule")
    p.add_argument("--threads", type=int, default=None, help="override the config's torch thread count")
    p.add_argument("--export-to", type=Path, default=None, help="also export the EMA weights here")
    p.add_argument("--export-only", action="store_true", help="export OUT/ckpt.pt without training")
    p.add_argument("--export-which", choices=["ema", "best"], default="ema")
    args = p.parse_args(argv)

    if args.export_only:
        print(export_checkpoint(args.out, args.export_to or args.out, which=args.export_which))
        return
    cfg = CONFIGS[args.config]
    ckpt = args.out / "ckpt.pt"
    if args.resume and ckpt.exists():
        cfg = config_from_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["config"])
    if args.max_steps is not None:
        cfg = replace(cfg, max_steps=args.max_steps)
    if args.threads is not None:
        cfg = replace(cfg, threads=args.threads)
    torch.set_num_threads(cfg.threads)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("config 'gpu' needs a CUDA device; use --config cpu")
    trainer = Trainer(cfg, args.out, args.data)
    if args.resume and ckpt.exists():
        trainer.load(ckpt)
        print(f"resumed at step {trainer.step}", flush=True)
    elif ckpt.exists():
        raise SystemExit(f"{ckpt} exists: pass --resume or choose another --out")
    trainer.run(max_minutes=args.max_minutes, stop_at=args.stop_at)
    path = export(trainer.ema, trainer.transform, cfg, args.out, step=trainer.step)
    print(f"exported {path}", flush=True)
    if args.export_to is not None:
        print(f"exported {export(trainer.ema, trainer.transform, cfg, args.export_to, step=trainer.step)}")


if __name__ == "__main__":
    main()
