"""Build Fashion-MNIST scenes for segmentation: 64x64 canvases of 2-4 items, SIRENs and label maps.

    python datasets/fashion_mnist_scenes/build.py --split train --count 3000 --out .cache/fashion_mnist_scenes
    python datasets/fashion_mnist_scenes/build.py --split test --count 1000 --out .cache/fashion_mnist_scenes

Test scenes use test items only. Scenes are deterministic given ``--seed``; rerun the same
command to resume, or grow nothing: ``--count`` is part of the recorded settings.
"""

from __future__ import annotations

import argparse
import sys

from inrnet.datasets import scenes
from inrnet.datasets.parts import add_build_arguments, apply_build_arguments, log_quality


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", required=True, choices=sorted(scenes.SPLITS))
    p.add_argument("--count", type=int, required=True, help="number of scenes")
    p.add_argument("--out", required=True, help="dataset folder; the split goes to <out>/<split>")
    p.add_argument("--source", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--seed", type=int, default=0)
    add_build_arguments(p, chunk_size=250)
    args = p.parse_args(argv)
    device = apply_build_arguments(args)
    dataset = scenes.build_scenes(args.out, args.split, args.count, source_root=args.source, seed=args.seed,
                                  chunk_size=args.chunk_size, start=args.start, stop=args.stop, part=args.part,
                                  device=device, compile=args.compile)
    if dataset is not None:
        log_quality(dataset.quality)
    return 0


if __name__ == "__main__":
    sys.exit(main())
