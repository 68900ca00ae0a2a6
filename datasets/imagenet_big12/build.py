"""Build ImageNet big-12 INRs (paper App. D.1): SIRENs (train, test) and Fourier-feature nets (test).

    python datasets/imagenet_big12/build.py --imagenet /data/imagenet --wordnet /data/imagenet/wordnet.is_a.txt \
        --split train --out /data/inr/imagenet_big12
    # 8 GPUs, one process each (each takes --part RANK/8 and cuda:LOCAL_RANK; see docs/guide/scale.md):
    torchrun --standalone --nproc-per-node 8 datasets/imagenet_big12/build.py \
        --imagenet /data/imagenet --wordnet /data/devkit/data/meta.mat --split train --out /data/inr/imagenet_big12

``--imagenet`` holds ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``; ``--wordnet`` is
``wordnet.is_a.txt`` (with ``words.txt`` beside it) or the ILSVRC2012 devkit's ``meta.mat``.
The defaults are the paper's settings; rerun the same command to resume.
"""

from __future__ import annotations

import argparse
import sys

from inrnet.datasets import imagenet
from inrnet.datasets.parts import add_build_arguments, apply_build_arguments
from inrnet.inr import FourierFamily, SirenFamily


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--imagenet", required=True, help="ImageNet root with train/ and val/ class folders")
    p.add_argument("--wordnet", required=True, help="wordnet.is_a.txt, a devkit meta.mat, or a folder with one")
    p.add_argument("--split", required=True, choices=sorted(imagenet.SPLITS))
    p.add_argument("--out", required=True, help="dataset folder; the split goes to <out>/<split>")
    p.add_argument("--per-class", type=int, default=None, help="images per superclass (default: the paper's "
                   "500 train / 200 test; 0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=None, help="Adam steps (default 2000)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-4 SIREN, 1e-3 Fourier)")
    p.add_argument("--batch-size", type=int, default=None, help="INRs fitted together (default 8)")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=None, help="linear layers (default: 5 SIREN, 4 Fourier)")
    add_build_arguments(p, chunk_size=64)
    args = p.parse_args(argv)
    device = apply_build_arguments(args)
    fourier = imagenet.SPLITS[args.split][1] == "fourier"
    if fourier:
        family = FourierFamily(2, 3, features=256, sigma=5.0, width=args.width, depth=args.depth or 4)
        fit_kwargs = dict(imagenet.FIT_FOURIER)
    else:
        family = SirenFamily(2, 3, width=args.width, depth=args.depth or 5, omega_0=30.0, first_omega_0=30.0)
        fit_kwargs = dict(imagenet.FIT)
    for key in ("steps", "lr", "batch_size"):
        if getattr(args, key) is not None:
            fit_kwargs[key] = getattr(args, key)
    imagenet.build_big12(args.imagenet, args.wordnet, args.out, args.split, per_class=args.per_class,
                         seed=args.seed, image_size=args.image_size, family=family, fit_kwargs=fit_kwargs,
                         chunk_size=args.chunk_size, start=args.start, stop=args.stop, part=args.part,
                         device=device, compile=args.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
