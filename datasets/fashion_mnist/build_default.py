"""Build the embedded default dataset ``inrnet/data/fashion_mnist_default.safetensors``.

    python datasets/fashion_mnist/build_default.py --full .cache/fashion_mnist

It takes a class-balanced subset of the full build (``build.py``): the first 400 items
of each class of the train split (4000 SIRENs), the first 100 of each class of the test
split (1000 SIRENs), and the first 50 of those per class as Fourier-feature nets (500),
stores their parameters as float16 with their uint8 images, and records the fit quality
of the float16 parameters. Only the chunks holding those items must be fitted
(``build.py --split train --stop 5000``, ``--split test``, ``--split test_fourier --stop 5000``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

import torch

from inrnet.datasets import fashion_mnist as fm
from inrnet.datasets.embedded import DEFAULT_PATH, write_default
from inrnet.datasets.parts import read_items
from inrnet.inr import fit_quality

#: split -> (source split, items per class, the build folder)
SELECTION = {"train": ("train", 400, "train"), "test": ("test", 100, "test"),
             "test_fourier": ("test", 50, "test_fourier")}


def first_per_class(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices of the first ``per_class`` items of each class, sorted (int64 Tensor[<= 10 * per_class])."""
    picks = [(labels == c).nonzero()[:per_class, 0] for c in range(len(fm.CLASSES))]
    return torch.cat(picks).sort().values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", required=True, help="the full build's folder (holding train/, test/, test_fourier/)")
    p.add_argument("--source", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--output", default=str(DEFAULT_PATH))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    images = {s: fm.load_fashion_mnist_images(s, args.source) for s in ("train", "test")}
    splits, kept_images = {}, {}
    for split, (source, per_class, folder) in SELECTION.items():
        pool, labels = images[source]
        index = first_per_class(labels, per_class)
        inrs, stored_labels, _ = read_items(Path(args.full) / folder, index)
        if not torch.equal(stored_labels.long(), labels[index]):
            raise ValueError(f"{args.full}/{folder}: stored labels disagree with the IDX labels")
        half = inrs.to(dtype=torch.float16).to(dtype=torch.float32)
        x = pool[index, None].float() / 255  # (n, 1, 28, 28)
        quality = fit_quality(inrs.family, half.params, x)
        splits[split] = {"family": inrs.family, "params": half.params, "labels": labels[index], "index": index,
                         "quality": quality}
        if split == source:
            kept_images[source] = pool[index]
        pct = torch.tensor([0.05, 0.5, 0.95])
        logging.info("%s: %d INRs, float16 psnr_grid 5/50/95%%: %s, psnr_offgrid: %s", split, len(index),
                     quality["psnr_grid"].quantile(pct).tolist(), quality["psnr_offgrid"].quantile(pct).tolist())
    meta = {"source": "Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), Zalando Research, MIT licence",
            "selection": {s: f"first {n} items of each class of the {src} split"
                          for s, (src, n, _) in SELECTION.items()},
            "fit": {s: json.loads((Path(args.full) / f / "build.json").read_text())
                    for s, (_, _, f) in SELECTION.items()}}
    write_default(args.output, splits, kept_images, meta)
    digest = hashlib.sha256(Path(args.output).read_bytes()).hexdigest()
    logging.info("wrote %s (%.2f MB, sha256 %s)", args.output, Path(args.output).stat().st_size / 1e6, digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
