"""Build the Fashion-MNIST INR datasets: SIRENs (train, test) and Fourier-feature nets (test).

    python datasets/fashion_mnist/build.py --split test --out .cache/fashion_mnist
    python datasets/fashion_mnist/build.py --split train --out .cache/fashion_mnist --part 0/4   # one of 4 processes
    python datasets/fashion_mnist/build.py --split test_fourier --out .cache/fashion_mnist

Each split goes to ``<out>/<split>/`` (an INR dataset once all its chunks are fitted); rerun
the same command to resume. ``--source`` is a folder with the IDX files (default:
``$INRNET_FASHION_MNIST``, then Debian's ``/usr/share/datasets/fashion-mnist``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time


from inrnet.datasets import fashion_mnist as fm
from inrnet.datasets.parts import add_build_arguments, apply_build_arguments, build_parts, log_quality

#: split -> (source split, family, fit settings, seed of its first chunk)
SPLITS = {"train": ("train", fm.SIREN, fm.FIT, 0),
          "test": ("test", fm.SIREN, fm.FIT, 1_000_000),
          "test_fourier": ("test", fm.FOURIER, fm.FIT_FOURIER, 2_000_000)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", required=True, choices=sorted(SPLITS))
    p.add_argument("--out", required=True, help="dataset folder; the split goes to <out>/<split>")
    p.add_argument("--source", default=None, help="folder with the IDX files")
    p.add_argument("--download", action="store_true", help="download the IDX files with torchvision if missing")
    p.add_argument("--count", type=int, default=None, help="only the first COUNT items (small builds)")
    p.add_argument("--steps", type=int, default=None, help="Adam steps (default: 100 SIREN, 300 Fourier)")
    add_build_arguments(p, chunk_size=1000)
    args = p.parse_args(argv)
    device = apply_build_arguments(args)
    source_split, family, fit_kwargs, seed = SPLITS[args.split]
    images, labels = fm.load_fashion_mnist_images(source_split, args.source, download=args.download)
    count = len(images) if args.count is None else min(args.count, len(images))

    def source(a: int, b: int):
        return images[a:b, None].float().div_(255.0), labels[a:b]  # (n, 1, 28, 28), (n,)

    t0 = time.time()
    dataset = build_parts(f"{args.out}/{args.split}", source, family, count=count, chunk_size=args.chunk_size,
                          fit_kwargs={**fit_kwargs, **({"steps": args.steps} if args.steps else {}),
                                      "device": device, "compile": args.compile}, seed=seed,
                          start=args.start, stop=args.stop, part=args.part,
                          extra={"source": f"fashion_mnist/{source_split}", "scale": "uint8 / 255"})
    logging.info("this run took %.0f s", time.time() - t0)
    if dataset is None:
        logging.info("%s/%s: this run's chunks are finished; others are still missing", args.out, args.split)
        return 0
    log_quality(dataset.quality)
    return 0


if __name__ == "__main__":
    sys.exit(main())
