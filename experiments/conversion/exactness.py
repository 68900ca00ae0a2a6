"""Property 4 in numbers: converted torchvision/timm CNNs against the CNNs on grid samples.

For each architecture (random weights, batch-norm statistics and affine parameters
randomised so that no layer is an identity), the CNN runs on random images and the
converted INR-Net on ``PixelINR(images)`` sampled on ``PointSet.grid(shape)``; the table
gives ``max |out - ref| / max |ref|`` in float32 and float64 and the time of one conversion
and one float32 forward pass (after a first pass that builds the neighbour caches).

    python experiments/conversion/exactness.py            # small inputs, as in the tests
    python experiments/conversion/exactness.py --large    # adds 224 x 224 runs
"""

from __future__ import annotations

import argparse
import copy
import time

import timm
import torch
import torchvision
from torch import nn

from inrnet.convert import from_torch
from inrnet.field import PointSet
from inrnet.inr import PixelINR, sample

MODELS = [
    ("torchvision", "resnet18", (32, 32)), ("torchvision", "resnet50", (33, 35)),
    ("torchvision", "efficientnet_b0", (32, 32)), ("torchvision", "convnext_tiny", (35, 33)),
    ("torchvision", "vgg11_bn", (33, 35)), ("torchvision", "vgg11_bn", (64, 64)),
    ("torchvision", "mobilenet_v3_small", (33, 35)),
    ("timm", "resnet18", (33, 35)), ("timm", "resnet50", (32, 32)), ("timm", "efficientnet_b0", (33, 32)),
    ("timm", "convnext_tiny", (32, 32)), ("timm", "vgg11_bn", (33, 35)), ("timm", "mobilenetv3_small_100", (32, 34)),
    ("timm", "tf_efficientnet_b0", (33, 30)),
]
LARGE = [("torchvision", "resnet18", (224, 224)), ("timm", "efficientnet_b0", (224, 224)),
         ("torchvision", "convnext_tiny", (224, 224)), ("torchvision", "vgg11_bn", (224, 224))]


def build(source: str, name: str) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False) if source == "timm" else torchvision.models.get_model(name)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                for name_, lo, hi in (("weight", 0.5, 1.5), ("bias", -0.3, 0.3), ("running_mean", -0.3, 0.3),
                                      ("running_var", 0.5, 2.0)):
                    t = getattr(m, name_, None)
                    if t is not None:
                        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model.eval()


def error(cnn: nn.Module, shape, dtype, batch: int) -> tuple[float, float, float]:
    cnn = copy.deepcopy(cnn).to(dtype)
    images = torch.randn(batch, 3, *shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    tic = time.perf_counter()
    inet = from_torch(cnn, shape)
    t_convert = time.perf_counter() - tic
    field = sample(PixelINR(images), PointSet.grid(shape, dtype=dtype))
    with torch.no_grad():
        inet(field)
        tic = time.perf_counter()
        out = inet(field)
        t_forward = time.perf_counter() - tic
        ref = cnn(images)
    return float((out - ref).abs().max() / ref.abs().max()), t_convert, t_forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large", action="store_true", help="also convert at 224 x 224 (batch 1)")
    args = parser.parse_args()
    print("| source | model | input | batch | max rel. error float32 | float64 | convert (s) | forward (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for source, name, shape in MODELS + (LARGE if args.large else []):
        batch = 1 if shape[0] >= 224 else 2
        cnn = build(source, name)
        e32, t_convert, t_forward = error(cnn, shape, torch.float32, batch)
        e64 = error(cnn, shape, torch.float64, batch)[0] if shape[0] < 224 else float("nan")
        print(f"| {source} | {name} | {shape[0]}x{shape[1]} | {batch} | {e32:.1e} | {e64:.1e} | {t_convert:.2f} | "
              f"{t_forward:.2f} |", flush=True)


if __name__ == "__main__":
    main()
