"""Build Cityscapes INRs (paper App. D.2): SIRENs of the images, 7-category label maps at full resolution.

    python datasets/cityscapes/build.py --cityscapes /data/cityscapes --split train --out /data/inr/cityscapes
    python datasets/cityscapes/build.py --cityscapes /data/cityscapes --split val --out /data/inr/cityscapes
    # 4 GPUs: CUDA_VISIBLE_DEVICES=$k python datasets/cityscapes/build.py ... --part $k/4

``--cityscapes`` holds ``leftImg8bit/``, ``gtFine/`` and ``gtCoarse/``. ``get_dataset("cityscapes",
split)`` reads ``train`` (coarse labels) and ``train_fine`` from ``<out>/train``, ``test``
(fine) and ``test_coarse`` from ``<out>/val``. Rerun the same command to resume.
"""

from __future__ import annotations

import argparse
import sys

from inrnet.datasets import cityscapes
from inrnet.datasets.parts import add_build_arguments, apply_build_arguments


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cityscapes", required=True, help="Cityscapes root (leftImg8bit/, gtFine/, gtCoarse/)")
    p.add_argument("--split", required=True, choices=["train", "val"])
    p.add_argument("--out", required=True, help="dataset folder; the split goes to <out>/<split>")
    p.add_argument("--annotations", nargs="+", default=["gtFine", "gtCoarse"], choices=sorted(cityscapes.ANNOTATIONS))
    p.add_argument("--image-size", type=int, nargs=2, default=[256, 512], metavar=("H", "W"))
    p.add_argument("--label-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="store label maps at this size (default: full resolution)")
    p.add_argument("--count", type=int, default=None, help="only the first COUNT images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="Adam steps (default 2500)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=None, help="INRs fitted together (default 4)")
    add_build_arguments(p, chunk_size=32)
    args = p.parse_args(argv)
    device = apply_build_arguments(args)
    fit_kwargs = dict(cityscapes.FIT)
    for key in ("steps", "lr", "batch_size"):
        if getattr(args, key) is not None:
            fit_kwargs[key] = getattr(args, key)
    cityscapes.build_cityscapes(args.cityscapes, args.out, args.split, annotations=args.annotations,
                                image_size=args.image_size, label_size=args.label_size, count=args.count,
                                seed=args.seed, fit_kwargs=fit_kwargs, chunk_size=args.chunk_size, start=args.start,
                                stop=args.stop, part=args.part, device=device, compile=args.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
