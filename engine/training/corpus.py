"""Build the training corpus from the Debian music packages unpacked by scripts/fetch_corpus.sh.

Why a cache: decoding ogg/mp3 is slower than a training step on CPU, so every track
is decoded once to 44.1 kHz stereo int16 and stored in two flat files (train, test)
with a JSON index. Whole tracks are held out for the test split, chosen per source
by a hash of the track's group name, so the split is deterministic and a track's
variants (STK "_fast" remixes, Hedgewars "_sd" sudden-death versions) never straddle it.

Run: python -m engine.training.corpus --out data/
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 44100
AUDIO_EXTS = {".ogg", ".mp3", ".flac", ".wav", ".opus"}
TEST_FRACTION = 0.10

# package -> folder (relative to the unpacked package root) that holds its music.
SOURCES: dict[str, str] = {
    "wesnoth-1.16-music": "usr/share/games/wesnoth/1.16/data/core/music",
    "hyperrogue-music": "usr/share/hyperrogue/music",
    "asc-music": "usr/share/games/asc/music",
    "hedgewars-data": "usr/share/games/hedgewars/Data/Music",
    "supertuxkart-data": "usr/share/games/supertuxkart/data/music",
}

log = logging.getLogger(__name__)


@dataclass
class Track:
    source: str
    name: str
    group: str
    split: str
    offset: int  # first frame in the split's flat file
    frames: int  # samples per channel

    @property
    def duration_s(self) -> float:
        return self.frames / SAMPLE_RATE


def group_name(filename: str) -> str:
    """Variants of one piece share a group so they land in the same split."""
    stem = Path(filename).stem.lower()
    return re.sub(r"(_fast|_f|_sd)$", "", stem)


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def list_tracks(raw_dir: Path) -> list[tuple[str, Path]]:
    found = []
    for source, sub in SOURCES.items():
        folder = raw_dir / source / sub
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} missing: run scripts/fetch_corpus.sh first")
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in AUDIO_EXTS:
                found.append((source, path))
    return found


def decode(path: Path) -> np.ndarray:
    """(2, N) float32 at 44.1 kHz; mono is duplicated."""
    from pedalboard.io import AudioFile

    with AudioFile(str(path)).resampled_to(SAMPLE_RATE) as f:
        audio = f.read(f.frames)
    if audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    return audio[:2].astype(np.float32)


def assign_splits(durations: dict[tuple[str, str], float]) -> dict[tuple[str, str], str]:
    """Per source, hold out groups in hash order until >= TEST_FRACTION of its duration."""
    splits: dict[tuple[str, str], str] = {}
    by_source: dict[str, dict[str, float]] = {}
    for (source, group), dur in durations.items():
        by_source.setdefault(source, {})[group] = dur
    for source, groups in by_source.items():
        total = sum(groups.values())
        held = 0.0
        for group in sorted(groups, key=lambda g: _hash(f"{source}/{g}")):
            if held < TEST_FRACTION * total and len(groups) > 1:
                splits[(source, group)] = "test"
                held += groups[group]
            else:
                splits[(source, group)] = "train"
    return splits


def probe_seconds(path: Path) -> float:
    """Duration from the header (no decoding), used only to choose the split."""
    from pedalboard.io import AudioFile

    with AudioFile(str(path)) as f:
        return float(f.duration)


def build(raw_dir: Path, out_dir: Path) -> list[Track]:
    """Decode one track at a time, appending to raw int16 split files (the corpus is ~10 GB as float)."""
    files = list_tracks(raw_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    durations: dict[tuple[str, str], float] = {}
    for source, path in files:
        key = (source, group_name(path.name))
        durations[key] = durations.get(key, 0.0) + probe_seconds(path)
    splits = assign_splits(durations)
    tracks: list[Track] = []
    for split in ("train", "test"):
        offset = 0
        with open(out_dir / f"{split}.bin", "wb") as out:
            for source, path in files:
                if splits[(source, group_name(path.name))] != split:
                    continue
                audio = decode(path)
                n = audio.shape[1]
                pcm = np.round(np.clip(audio.T, -1.0, 32767 / 32768) * 32768).astype("<i2")
                out.write(pcm.tobytes())
                tracks.append(Track(source, path.name, group_name(path.name), split, offset, n))
                offset += n
                log.info("%s: %s %.1f s", split, path.name, n / SAMPLE_RATE)
    (out_dir / "index.json").write_text(json.dumps(
        {"sample_rate": SAMPLE_RATE, "tracks": [asdict(t) for t in tracks]}, indent=1))
    return tracks


def load_index(data_dir: Path) -> list[Track]:
    meta = json.loads((data_dir / "index.json").read_text())
    return [Track(**t) for t in meta["tracks"]]


def load_split(data_dir: Path, split: str) -> np.ndarray:
    """(N, 2) int16 memory map of a split's flat file."""
    return np.memmap(data_dir / f"{split}.bin", dtype="<i2", mode="r").reshape(-1, 2)


def summary(tracks: list[Track]) -> str:
    rows = {}
    for t in tracks:
        r = rows.setdefault(t.source, {"train": [0, 0.0], "test": [0, 0.0]})
        r[t.split][0] += 1
        r[t.split][1] += t.duration_s
    lines = ["source | train tracks | train h | test tracks | test h"]
    for s, r in rows.items():
        lines.append(f"{s} | {r['train'][0]} | {r['train'][1] / 3600:.2f} | {r['test'][0]} | {r['test'][1] / 3600:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("data"))
    p.add_argument("--raw", type=Path, default=None, help="unpacked packages (default: OUT/raw)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tracks = build(args.raw or args.out / "raw", args.out / "corpus")
    print(summary(tracks))


if __name__ == "__main__":
    main()
