"""GPU timings printed by ``benchmarks/gpu_check.sh``: three small tables.

1. ``BSplineConv`` 3x3, 64 -> 64 channels, batch 32, on 1024 Sobol points, forward and
   forward + backward, next to ``nn.Conv2d`` 3x3 on 32x32 (the same number of outputs).
2. INR-Net-4 (``create_model("inrnet4")``: widths 32, 64 and one residual block) on 48
   Fashion-MNIST SIRENs (the test split shipped with the package) at 1024 Sobol points:
   sampling the INRs, the forward on cached geometry, the forward on a fresh scramble
   (neighbour search and gather plans included, as in every training step) and a training
   step (forward + backward) on a fresh scramble.
3. Fitting throughput: SIREN 2 -> 32 -> 32 -> 1 (omega_0 = 30, the Fashion-MNIST family) to
   500 Fashion-MNIST train images (784 pixels), one group, 100 Adam steps at 3e-3 (the
   dataset build's recipe), after an untimed warm-up fit.

Times are wall clock between ``torch.cuda.synchronize()`` calls; the compared
configurations run in interleaved rounds and the table gives the median over all calls
(the minimum in brackets). TF32 is off for matmuls and cuDNN, so both sides of every
comparison compute in full float32.

    python benchmarks/gpu_timings.py [--device cuda] [--small]

``--small`` shrinks every size (for a run on the CPU that only shows the script works).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from inrnet.datasets import get_dataset
from inrnet.datasets.fashion_mnist import default_images
from inrnet.field import Field, PointSet
from inrnet.inr import SirenFamily, fit, sample
from inrnet.models import create_model
from inrnet.nn.bspline_conv import BSplineConv
from inrnet.sampling import Sampler, sobol

SIZES = {
    "full": dict(batch=32, channels=64, side=32, inrs=48, points=1024, fit_inrs=500, fit_steps=100, rounds=10,
                 repeats=5),
    "small": dict(batch=4, channels=16, side=16, inrs=8, points=256, fit_inrs=20, fit_steps=5, rounds=2,
                  repeats=2),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int, repeats: int,
                warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of each call of each function, the functions taking turns round by round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(repeats):
                synchronize(device)
                t = time.perf_counter()
                fn()
                synchronize(device)
                times[name].append(time.perf_counter() - t)
    return times


def ms(times: list[float]) -> str:
    return f"{1e3 * statistics.median(times):.2f} ({1e3 * min(times):.2f})"


def conv_table(device: torch.device, s: dict) -> None:
    torch.manual_seed(0)
    b, c, side = s["batch"], s["channels"], s["side"]
    n = side * side
    field = Field(torch.randn(b, n, c, device=device, requires_grad=True), PointSet(sobol(n, 2, seed=0, device=device)))
    ours = BSplineConv(c, c, 3, 2 / side).to(device)
    conv = torch.nn.Conv2d(c, c, 3, padding=1).to(device)
    image = torch.randn(b, c, side, side, device=device, requires_grad=True)
    ours(field)  # neighbour search and gather plan: once per point set, outside the timing
    with torch.no_grad():
        fwd = interleaved({"ours": lambda: ours(field), "conv": lambda: conv(image)}, device, s["rounds"],
                          s["repeats"])
    both = interleaved({"ours": lambda: ours(field).values.sum().backward(),
                        "conv": lambda: conv(image).sum().backward()}, device, s["rounds"], s["repeats"])
    print(f"\n## BSplineConv 3x3 vs nn.Conv2d, {c} -> {c} channels, batch {b}\n")
    print("| layer | inputs | forward (ms) | forward + backward (ms) |\n|---|---|---|---|")
    print(f"| BSplineConv | {n} Sobol points | {ms(fwd['ours'])} | {ms(both['ours'])} |")
    print(f"| nn.Conv2d | {side}x{side} grid | {ms(fwd['conv'])} | {ms(both['conv'])} |")
    ratio = [statistics.median(t["ours"]) / statistics.median(t["conv"]) for t in (fwd, both)]
    print(f"| ratio (medians) | | {ratio[0]:.2f} | {ratio[1]:.2f} |", flush=True)


def inrnet4_table(device: torch.device, s: dict) -> None:
    torch.manual_seed(0)
    k, n = s["inrs"], s["points"]
    inrs, labels = get_dataset("fashion_mnist_default", "test").batch(list(range(k)))
    inrs, labels = inrs.to(device), labels.to(device)
    model = create_model("inrnet4", in_channels=1, num_classes=10).to(device)
    sampler = Sampler("sobol", n=n, device=device)  # a fresh scramble at every call
    fixed = sampler.draw(0)
    cached = sample(inrs, fixed, chunk_size=64)
    model.eval()
    with torch.no_grad():
        model(cached)  # geometry of the fixed points, cached outside the timing

    def train_step():
        model.train()
        loss = F.cross_entropy(model(sample(inrs, sampler(), chunk_size=64)), labels)
        loss.backward()
        model.eval()

    with torch.no_grad():
        t = interleaved({"sample": lambda: sample(inrs, fixed, chunk_size=64), "cached": lambda: model(cached),
                         "fresh": lambda: model(sample(inrs, sampler(), chunk_size=64))},
                        device, s["rounds"], s["repeats"])
    t |= interleaved({"train": train_step}, device, s["rounds"], s["repeats"])
    print(f"\n## INR-Net-4 on {k} Fashion-MNIST SIRENs at {n} Sobol points\n")
    print("| step | time (ms) | INRs/s |\n|---|---|---|")
    for key, what in (("sample", "sample the INRs"), ("cached", "forward, geometry cached"),
                      ("fresh", "sample + forward on fresh points (search and plans included)"),
                      ("train", "training step on fresh points (forward + backward)")):
        print(f"| {what} | {ms(t[key])} | {k / statistics.median(t[key]):.0f} |")


def fit_table(device: torch.device, s: dict) -> None:
    k, steps = s["fit_inrs"], s["fit_steps"]
    images = default_images("train")[0][:k].unsqueeze(1).float().div(255).to(device)  # (k, 1, 28, 28)
    family = SirenFamily(2, 1, width=32, depth=3, omega_0=30.0, first_omega_0=30.0)
    kw = dict(lr=3e-3, batch_size=k, progress=False)
    fit(images, family, steps=2, **kw)  # warm-up: CUDA context, kernels, allocator
    synchronize(device)
    t = time.perf_counter()
    _, quality = fit(images, family, steps=steps, **kw)
    synchronize(device)
    wall = time.perf_counter() - t
    psnr = quality["psnr_grid"].float()
    print(f"\n## Fitting {family!r}\n")
    print("| INRs (one group) | pixels | Adam steps | wall (s) | ms/step | INRs/s | on-grid PSNR median (dB) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {k} | {images[0].numel()} | {steps} | {wall:.2f} | {1e3 * wall / steps:.2f} | {k / wall:.0f} | "
          f"{psnr.median():.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--small", action="store_true", help="small sizes (a CPU run that shows the script works)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device visible to torch {torch.__version__}")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    sizes = SIZES["small" if args.small else "full"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {name}; TF32 off; sizes: {'small' if args.small else 'full'}; "
          f"times: median (min) of {sizes['rounds']} interleaved rounds x {sizes['repeats']} calls")
    start = time.perf_counter()
    conv_table(device, sizes)
    inrnet4_table(device, sizes)
    fit_table(device, sizes)
    print(f"\ntimings took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
