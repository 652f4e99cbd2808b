"""Peak resident memory of training on a Pets-sized folder, and of streaming a memory-mapped ImageNet-style
cache larger than RAM would like (measured at N images, extrapolated linearly to 200k).

    python benchmarks/bench_memory.py --work /tmp/viny-mem [--pets 7349] [--folder 25000] [--micro-batch 0]
        [--streams 0] [--precision auto]

Builds real-layout folders from the embedded synthetic images (JPEG + PNG trimaps), then runs
1) `viny train segment --dataset pets` (full ViNy, one short epoch) under /usr/bin/time -v, and
2) a pass over every batch of the decoded folder cache (index + batched augmentation, no model) in a
   child process, reporting its peak RSS and how much of it is file-backed (the memory map).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_pets(root: Path, n: int) -> Path:
    from viny_probe.data.synthetic import synthetic_pets

    folder = root / "oxford-iiit-pet"
    if (folder / "annotations" / "trainval.txt").exists():
        return root
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    lines = []
    for start in range(0, n, 1000):
        data = synthetic_pets(min(1000, n - start), 128, seed=start + 1)
        for i in range(len(data)):
            name = f"Breed_{start + i}"
            Image.fromarray(data.images[i].permute(1, 2, 0).numpy()).save(
                folder / "images" / f"{name}.jpg", quality=90
            )
            Image.fromarray(data.masks[i].numpy() + 1).save(
                folder / "annotations" / "trimaps" / f"{name}.png"
            )
            lines.append(f"{name} {1 + int(data.labels[i])} 1 1")
    (folder / "annotations" / "trainval.txt").write_text("\n".join(lines) + "\n")
    (folder / "annotations" / "test.txt").write_text("")
    return root


def write_folder(root: Path, n: int) -> Path:
    from viny_probe.data.synthetic import synthetic_unlabeled

    folder = root / "train" / "n00000000"
    if folder.exists() and len(list(folder.iterdir())) >= n:
        return root
    folder.mkdir(parents=True, exist_ok=True)
    base = synthetic_unlabeled(2000, 128, seed=7).images.permute(0, 2, 3, 1).numpy()
    for k in range(n):
        img = np.roll(base[k % len(base)], shift=k // len(base), axis=1)
        Image.fromarray(img).save(folder / f"img_{k}.JPEG", quality=90)
    return root


def stream_cache(root: str, n: int) -> None:
    """Child process: decode (once) and stream every batch of an n-image folder cache."""
    import torch

    from viny_probe.data import load_dataset
    from viny_probe.data.augment import random_hflip, random_resized_crop, to_float
    from viny_probe.trainers.base import device_batch

    t0 = time.perf_counter()
    data = load_dataset("folder", size=128, data_root=root, limit=n)
    t_load = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=gen)
    t0 = time.perf_counter()
    for s in range(0, len(data), 64):
        b = device_batch(data, order[s : s + 64], torch.device("cpu"))
        random_hflip(gen, random_resized_crop(to_float(b["images"]), gen))
    t_pass = time.perf_counter() - t0
    status = Path("/proc/self/status").read_text()
    fields = {
        k: int(re.search(rf"{k}:\s+(\d+)", status).group(1)) // 1024 for k in ("VmHWM", "RssAnon", "RssFile")
    }
    print(
        json.dumps(
            {
                "images": len(data),
                "cache_bytes": data.images.numel(),
                "seconds_load": round(t_load, 1),
                "seconds_pass": round(t_pass, 1),
                "peak_rss_mb": fields["VmHWM"],
                "rss_anon_mb_at_end": fields["RssAnon"],
                "rss_file_mb_at_end": fields["RssFile"],
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/viny-mem"))
    ap.add_argument("--pets", type=int, default=7349)
    ap.add_argument("--folder", type=int, default=25000, help="0: skip the memory-mapped folder part")
    ap.add_argument("--micro-batch", default="0", help="the training run's --micro-batch (0 = auto)")
    ap.add_argument("--streams", default="0", help="the training run's --streams (0 = auto)")
    ap.add_argument("--precision", default="auto", help="the training run's --precision")
    ap.add_argument("--stream", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stream:
        return stream_cache(args.stream[0], int(args.stream[1]))
    env = {**os.environ, "VINY_CACHE_DIR": str(args.work / "cache")}
    out = {}
    pets = write_pets(args.work / "pets", args.pets)
    cmd = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "viny_probe",
        "train",
        "segment",
        "--dataset",
        "pets",
        "--data-root",
        str(pets),
        "--epochs",
        "1",
        "--train-size",
        "512",
        "--model",
        "viny",
        "--micro-batch",
        args.micro_batch,
        "--streams",
        args.streams,
        "--precision",
        args.precision,
        "-q",
        "--out",
        str(args.work / f"run-{time.time_ns()}"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    out["pets_train_peak_rss_mb"] = int(rss.group(1)) // 1024 if rss else None
    out["pets_images"] = args.pets
    out["micro_batch"] = args.micro_batch
    out["streams"] = args.streams
    out["precision"] = args.precision
    if not args.folder:
        print(json.dumps(out, indent=2))
        return None
    folder = write_folder(args.work / "imagenet", args.folder)
    proc = subprocess.run(
        [sys.executable, __file__, "--stream", str(folder), str(args.folder)],
        env=env,
        capture_output=True,
        text=True,
    )
    out["folder_stream"] = (
        json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else proc.stderr[-2000:]
    )
    out["self_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
