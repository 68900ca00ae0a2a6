"""Fashion-MNIST as pixel INRs: a stand-in INR dataset that needs no fitting.

Each image becomes a :class:`~inrnet.inr.PixelINR` in ``"linear"`` mode: exactly its pixels
at the 28x28 cell centres, bilinear in between (what ``F.interpolate(mode="bilinear",
align_corners=False)`` gives on finer grids). Written as stored INR datasets ``OUT/train``
and ``OUT/test`` (60000 + 10000 items, about 210 MB), usable wherever a dataset directory
is (``--dataset OUT``)::

    python experiments/pixel_fashion_mnist.py --out .cache/fashion_mnist_pixel
    python experiments/table1.py --dataset .cache/fashion_mnist_pixel --test-split test
"""

from __future__ import annotations

import argparse

from inrnet.datasets.fashion_mnist import load_fashion_mnist_images
from inrnet.inr import PixelINR, save_inrs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="dataset folder; splits go to OUT/train and OUT/test")
    parser.add_argument("--source", default=None, help="folder with the Fashion-MNIST IDX files")
    args = parser.parse_args(argv)
    for split in ("train", "test"):
        images, labels = load_fashion_mnist_images(split, args.source)
        save_inrs(f"{args.out}/{split}", PixelINR(images[:, None].float() / 255.0, "linear"), labels)
        print(f"{args.out}/{split}: {len(images)} pixel INRs")


if __name__ == "__main__":
    main()
