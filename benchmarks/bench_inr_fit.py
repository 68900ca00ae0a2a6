"""Batched fitting throughput: INRs per minute to a stated quality on 28x28 images.

SIREN 2 -> 32 -> 32 -> 1 (omega_0 = 30, the Fashion-MNIST architecture), Adam lr 3e-3,
100 full-grid steps, ``batch_size`` INRs per group; images from Fashion-MNIST
(``/usr/share/datasets/fashion-mnist``, Debian package ``dataset-fashion-mnist``) or,
without it, 28x28 crops of scikit-image photos. Prints throughput and the quality
reached (on-grid PSNR percentiles, off-grid PSNR mean), eager and with ``torch.compile``
(whose one-off compile time is reported apart from the steady-state throughput).

    .venv/bin/python benchmarks/bench_inr_fit.py [--inrs 512] [--batch-size 256] [--no-compile]
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np
import torch

from inrnet.inr import SirenFamily, fit

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def load_images(n: int) -> tuple[torch.Tensor, str]:
    """Tensor[n, 1, 28, 28] in [0, 1], and where it came from."""
    if FASHION.exists():
        with gzip.open(FASHION) as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
        return torch.tensor(x, dtype=torch.float32).div(255).unsqueeze(1), "Fashion-MNIST train[:n]"
    from skimage import data
    from skimage.transform import resize
    photos = [data.camera(), data.coins(), data.moon(), data.text(), data.page(), data.horse().astype(float)]
    rng = np.random.default_rng(0)
    crops = []
    for i in range(n):
        p = resize(photos[i % len(photos)].astype(float), (112, 112), anti_aliasing=True)
        r, c = rng.integers(0, 84, 2)
        crops.append(p[r:r + 28, c:c + 28])
    x = torch.tensor(np.stack(crops), dtype=torch.float32).unsqueeze(1)  # (n, 1, 28, 28)
    x = (x - x.amin((2, 3), keepdim=True)) / (x.amax((2, 3), keepdim=True) - x.amin((2, 3), keepdim=True) + 1e-8)
    return x, "scikit-image 28x28 crops"


def run(images: torch.Tensor, family: SirenFamily, args, compile: bool) -> str:
    kwargs = dict(steps=args.steps, lr=args.lr, batch_size=args.batch_size, progress=False, compile=compile)
    warm = 0.0
    if compile:
        t = time.perf_counter()
        fit(images[:args.batch_size], family, **{**kwargs, "steps": 2})  # compiles forward + backward once
        warm = time.perf_counter() - t
    t = time.perf_counter()
    _, q = fit(images, family, **kwargs)
    wall = time.perf_counter() - t
    p5, p50 = torch.quantile(q["psnr_grid"], torch.tensor([0.05, 0.5])).tolist()
    step_ms = 1e3 * wall / (args.steps * -(-len(images) // args.batch_size))
    return (f"| {'compile' if compile else 'eager'} | {len(images)} | {args.batch_size} | {step_ms:.1f} | "
            f"{wall:.1f} | {60 * len(images) / wall:.0f} | {p5:.1f} / {p50:.1f} | "
            f"{q['psnr_offgrid'].mean():.1f} | {warm:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inrs", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, source = load_images(args.inrs)
    family = SirenFamily(2, 1, width=32, depth=3, omega_0=30.0, first_omega_0=30.0)
    print(f"images: {source}; {family!r}; {args.steps} steps, lr {args.lr}")
    print("| mode | INRs | INRs/group | ms/step (group) | wall (s) | INRs/min | on-grid PSNR p5 / p50 (dB) "
          "| off-grid PSNR mean (dB) | compile (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(run(images, family, args, compile=False), flush=True)
    if not args.no_compile:
        print(run(images, family, args, compile=True), flush=True)


if __name__ == "__main__":
    main()
