"""A training step of the paper's INR-Net-4 and INR-Net-2, in the paper's own code and in ours
(issue 17, item 1).

The paper's code (Wang & Golland, "Deep Learning on Implicit Neural Datasets",
https://github.com/clintonjwang/inrnet) is not part of this project: fetch it yourself and
pass its folder::

    git clone https://github.com/clintonjwang/inrnet /tmp/paper
    python benchmarks/bench_paper.py --paper-repo /tmp/paper [--threads 1] [--batch 12 48]
        [--rounds 12] [--models inrnet4 inrnet2] [--conv bspline] [--points 1024]

What is compared: one AdamW step (lr 1e-3, weight decay 1e-3: the paper's config) of
cross-entropy on a batch of ``B`` INRs with 3 channels and 12 classes (the paper's
ImageNet-12 setting), on ``--points`` (1024, the paper's training setting) fresh scrambled
Sobol points per step. The paper's side runs its ``INRNet.forward``: its own sampler
(``generate_sample_points``, 'rqmc') and its ``DiscretizedINR``, then the layers of its
``InrCls4`` / ``InrCls2`` (``inrnet/inn/nets/classifier.py``: in its last preprint commit
``inr-5`` / ``inr-2``, the nets of the paper's ``inet_i5`` / ``inet_i2`` runs). Ours runs
``inrnet.sampling.sobol`` and a ``Field``, then the same architecture built from our layers
(below). The INR behind the points is not evaluated on either side: the values are fresh
standard normals, ``Tensor[B, N, 3]``, since evaluating the same INR costs both the same.

The architectures, as the paper's code builds them (``C`` channels, ``box w``: a kernel
supported on a ``w x w`` box of ``[-1, 1]^2``; ``N = 1024``):

| layer | INR-Net-4 (``InrCls4``, C = 32) | INR-Net-2 (``InrCls2``, C = 64) | points |
|---|---|---|---|
| conv + BN + ReLU | 3 -> 32, box 0.05 | 3 -> 64, box 0.05 | N -> N |
| additive positional encoding | 8 frequencies (32 ch) | 16 frequencies (64 ch) | N |
| conv + BN + ReLU, 1/4 of the points | 32 -> 64, box 0.2 | 64 -> 128, box 0.2 | N -> N/4 (prefix) |
| residual ``x + ReLU(BN(conv x))`` | 64 -> 64, box 0.3 | - | N/4 -> N/4 |
| global average pool, Linear, ReLU, Linear | 64 -> 128 -> 12 | 128 -> 128 -> 12 | - |

The paper's convs are its ``MLPConv`` (kernel MLP 2 -> 32 -> 32 -> C_out * C_in, 64 Voronoi bins),
each output the mean over the input points in the box. Ours are ``make_conv(--conv, ...)``:
``"bspline"`` (default: our ``BSplineConv``, 3 x 3 taps ``w / 3`` apart, so its support is
the same ``w x w`` box) or ``"mlp"`` (our ``MLPConv`` on the same box, 64 bins), with
``estimator="mean"`` (the paper's normalisation); our stride 2 keeps the prefix of N/4
points, as the paper's ``down_ratio=.25`` does. Our positional encoding is
``PositionalEncoding(C, C // 4, mode="add")`` (the same ``4 * C // 4`` sin/cos features of
``pi * 2**l``), our norms ``BatchNorm``. Both workers report the point counts each conv
actually sees, and the table prints them.

How the paper's code runs here: each implementation runs in its own worker subprocess
(the two packages are both called ``inrnet``); the parent drives both round by round over
pipes, every (model, batch) once per round on each side, alternating which side goes
first, and reports the median per side. In the paper's worker, a bare package module
``inrnet`` whose ``__path__`` is ``<paper-repo>/inrnet`` is put in ``sys.modules`` (so its
top-level ``__init__``, which imports its data loaders, experiments and wandb, is not
run, while its absolute ``inrnet.inn...`` imports work); ``monai``, ``seaborn`` and
``matplotlib`` (imported by its ``utils/util.py`` for plotting only) are stubbed; the
``"cuda"`` defaults of its functions (``device="cuda"``) are set to ``"cpu"``, and
``Tensor.cuda`` / ``Module.cuda`` are made no-ops. Nothing of the paper's code is copied.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# NB: nothing of our ``inrnet`` is imported at module level: the paper's worker runs this file
# too, and there ``inrnet`` is the paper's package.

CLONE = "git clone https://github.com/clintonjwang/inrnet /tmp/paper"
IN_CHANNELS, NUM_CLASSES, HIDDEN = 3, 12, 128
LR, WEIGHT_DECAY = 1e-3, 1e-3
ARCHS = {
    "inrnet4": dict(label="INR-Net-4", paper="InrCls4", widths=(32, 64), boxes=(0.05, 0.2, 0.3), residual=True),
    "inrnet2": dict(label="INR-Net-2", paper="InrCls2", widths=(64, 128), boxes=(0.05, 0.2), residual=False),
}
"""Each model as the paper's ``inrnet/inn/nets/classifier.py`` builds it: its class, the
channel widths ``(C, 2 C)``, the kernels' box widths (stem conv, strided conv, residual conv)."""
PAPER_FILES = ("inrnet/inn/nets/classifier.py", "inrnet/inn/nets/inrnet.py", "inrnet/inn/layers/conv.py",
               "inrnet/inn/point_set.py", "inrnet/inn/inr.py", "inrnet/inn/support.py")
STUBBED = ("monai", "monai.transforms", "seaborn", "matplotlib", "matplotlib.pyplot")


def check_paper_repo(path: str | None) -> Path:
    """The paper's repository folder, or ``SystemExit`` with what is wrong and how to get it."""
    how = (f"Fetch the paper's code (it is not part of this project) and pass its folder: {CLONE}, "
           "then --paper-repo /tmp/paper")
    if not path:
        raise SystemExit(f"bench_paper.py: --paper-repo is required: the folder of the paper's code. {how}")
    repo = Path(path).expanduser().resolve()
    if not repo.is_dir():
        raise SystemExit(f"bench_paper.py: --paper-repo {path}: no such folder. {how}")
    if (repo / "inrnet" / "field.py").is_file() and not (repo / "inrnet" / "inn").is_dir():
        raise SystemExit(f"bench_paper.py: --paper-repo {path} is this project's repository, not the paper's. {how}")
    missing = [f for f in PAPER_FILES if not (repo / f).is_file()]
    if missing:
        raise SystemExit(f"bench_paper.py: --paper-repo {path} is not the paper's repository "
                         f"(no {', '.join(missing)}). {how}")
    classifiers = (repo / PAPER_FILES[0]).read_text(errors="replace")
    absent = [spec["paper"] for spec in ARCHS.values() if f"class {spec['paper']}(" not in classifiers]
    if absent:
        raise SystemExit(f"bench_paper.py: --paper-repo {path}: {PAPER_FILES[0]} has no {', '.join(absent)}; "
                         f"not the paper's repository, or a version without these classifiers. {how}")
    return repo


# ---------------------------------------------------------------- shared by both workers


def _probe(net: nn.Module, hooks: list, example, seen: list) -> dict:
    """One eval-mode forward of ``example`` with the point-count ``hooks`` on (they append to
    ``seen``), then the hooks removed: ``{"params": ..., "points": "N->M, ..."}``."""
    with torch.no_grad():
        net.eval()
        net(example)
        net.train()
    for hook in hooks:
        hook.remove()
    return {"params": sum(p.numel() for p in net.parameters()), "points": ", ".join(seen)}


def _adamw_steps(name: str, net: nn.Module, batches, make_input) -> dict:
    """``{f"{name}/{b}": step()}``: one AdamW step of cross-entropy on ``make_input(b)`` (the net's
    input for a batch of ``b``) against fixed random labels, for each batch size."""
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = {}
    for b in batches:
        labels = torch.randint(0, NUM_CLASSES, (b,))

        def step(b=b, labels=labels):
            loss = F.cross_entropy(net(make_input(b)), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[f"{name}/{b}"] = step
    return steps


# ---------------------------------------------------------------- the paper's side (worker)


def _load_paper(repo: Path):
    """Import the paper's ``inrnet.inn`` from ``repo`` on the CPU; returns the module ``inrnet.inn``."""
    import importlib.machinery
    import inspect
    import types

    for name in STUBBED:  # imported by its utils/util.py for plots only
        stub = types.ModuleType(name)
        stub.__path__ = []
        sys.modules[name] = stub
    sys.modules["monai"].transforms = sys.modules["monai.transforms"]
    sys.modules["monai.transforms"].ScaleIntensityRangePercentiles = lambda *args, **kwargs: None
    sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]

    # The package without its __init__ (data loaders, experiments, wandb): a bare module on its folder.
    root = str(repo / "inrnet")
    spec = importlib.machinery.ModuleSpec("inrnet", None, is_package=True)
    spec.submodule_search_locations = [root]
    pkg = types.ModuleType("inrnet")
    pkg.__spec__, pkg.__path__, pkg.__package__ = spec, [root], "inrnet"
    sys.modules["inrnet"] = pkg
    import inrnet.inn  # noqa: F401  (the paper's)
    import inrnet.inn.nets.classifier  # noqa: F401

    # "CUDA is required": its device="cuda" defaults become "cpu"; .cuda() does nothing.
    def to_cpu(obj):
        fn = getattr(obj, "__func__", obj)
        if not inspect.isfunction(fn):
            return
        if fn.__defaults__:
            fn.__defaults__ = tuple("cpu" if d == "cuda" else d for d in fn.__defaults__)
        if fn.__kwdefaults__:
            fn.__kwdefaults__ = {k: "cpu" if v == "cuda" else v for k, v in fn.__kwdefaults__.items()}

    for name, module in list(sys.modules.items()):
        if name != "inrnet" and not name.startswith("inrnet."):
            continue
        assert getattr(module, "__file__", root).startswith(root), f"{name} is not the paper's"
        for obj in list(vars(module).values()):
            if getattr(obj, "__module__", None) != name:
                continue
            if inspect.isclass(obj):
                for attr in vars(obj).values():
                    to_cpu(attr)
            else:
                to_cpu(obj)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self
    return sys.modules["inrnet.inn"]


def _paper_steps(repo: Path, models, batches, points: int):
    """``{key: step()}`` of the paper's nets, and ``info`` (parameters, points each conv sees)."""
    _load_paper(repo)
    from inrnet.inn.inr import INRBatch
    from inrnet.inn.layers.conv import MLPConv
    from inrnet.inn.nets import classifier
    from inrnet.inn.nets.inrnet import INRNet
    from inrnet.inn.support import BoundingBox

    class RandomINR(INRBatch):
        """An INR batch of the paper's interface whose values are fresh normals (not evaluated)."""

        def __init__(self, batch: int):
            super().__init__(channels=IN_CHANNELS, domain=BoundingBox((-1, 1), (-1, 1)), device="cpu")
            self.batch = batch

        def forward(self, coords):
            return torch.randn(self.batch, coords.size(0), IN_CHANNELS)

    sampler = {"sample type": "rqmc", "sample points": points}
    steps, info = {}, {}
    for name in models:
        layers = getattr(classifier, ARCHS[name]["paper"])(in_channels=IN_CHANNELS, out_dims=NUM_CLASSES).layers
        net = INRNet(sampler=sampler, layers=layers)  # its forward: sample its points, then the layers
        tensors = [*net.parameters(), *net.buffers()]
        assert all(t.device.type == "cpu" for t in tensors), "a tensor of the paper's net is not on the CPU"
        seen = []  # its convs overwrite their input's coords: read them before the call
        convs = [m for m in net.modules() if isinstance(m, MLPConv)]
        hooks = [m.register_forward_pre_hook(lambda m, args: seen.append(f"{args[0].coords.size(0)}->")) for m in convs]
        hooks += [m.register_forward_hook(lambda m, args, out: seen.append(seen.pop() + str(out.coords.size(0))))
                  for m in convs]
        info[name] = _probe(net, hooks, RandomINR(2), seen)
        inrs = {b: RandomINR(b) for b in batches}
        steps.update(_adamw_steps(name, net, batches, inrs.__getitem__))
    return steps, info


# ---------------------------------------------------------------- our side (worker)


def _our_net(name: str, conv: str) -> nn.Module:
    """The paper's net of ``name`` (`ARCHS`) built from our layers."""
    from inrnet.models import make_conv
    from inrnet.nn import Add, BatchNorm, GlobalAvgPool, Pointwise, PositionalEncoding

    spec = ARCHS[name]
    (c0, c1), boxes = spec["widths"], spec["boxes"]

    def block(c_in, c_out, box, stride=1):
        # 3 x 3 taps box / 3 apart: a box x box support, as the paper's kernel
        layer = make_conv(conv, c_in, c_out, box / 3, stride=stride, estimator="mean")
        return nn.Sequential(layer, BatchNorm(c_out), Pointwise(nn.ReLU()))

    class PaperWidths(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(block(IN_CHANNELS, c0, boxes[0]), PositionalEncoding(c0, c0 // 4, mode="add"))
            self.down = block(c0, c1, boxes[1], stride=2)  # a quarter of the points, their prefix
            self.res = block(c1, c1, boxes[2]) if spec["residual"] else None
            self.add, self.pool = Add(), GlobalAvgPool()
            self.head = nn.Sequential(nn.Linear(c1, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, NUM_CLASSES))

        def forward(self, field):
            x = self.down(self.stem(field))
            if self.res is not None:
                x = self.add(x, self.res(x))
            return self.head(self.pool(x))

    return PaperWidths()


def _our_steps(models, batches, points: int, conv: str):
    from inrnet import Field
    from inrnet.nn import ContinuousConv
    from inrnet.sampling import Sampler

    seed = [0]
    sampler = Sampler("sobol", points)
    steps, info = {}, {}
    for name in models:
        torch.manual_seed(0)
        net = _our_net(name, conv)
        seen = []
        hooks = [m.register_forward_hook(lambda m, args, out: seen.append(f"{args[0].points.n}->{out.points.n}"))
                 for m in net.modules() if isinstance(m, ContinuousConv)]
        info[name] = _probe(net, hooks, Field(torch.randn(2, points, IN_CHANNELS), sampler.draw(0)), seen)

        def fresh_field(b):  # fresh points every step, drawn as training draws them
            seed[0] += 1
            return Field(torch.randn(b, points, IN_CHANNELS), sampler.draw(seed[0]))

        steps.update(_adamw_steps(name, net, batches, fresh_field))
    return steps, info


def worker(side: str, args) -> None:
    """Build the steps, warm them up, say ``ready``, then time one step per key read from stdin."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol; anything printed goes to stderr
    os.dup2(2, 1)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if side == "paper":
        steps, info = _paper_steps(check_paper_repo(args.paper_repo), args.models, args.batch, args.points)
    else:
        steps, info = _our_steps(args.models, args.batch, args.points, args.conv)
    for step in steps.values():  # warm-up: first-call allocations and caches
        for _ in range(2):
            step()
    proto.write(json.dumps({"ready": sorted(steps), "info": info}) + "\n")
    for line in sys.stdin:
        key = line.strip()
        if key == "quit":
            break
        t = time.perf_counter()
        steps[key]()
        proto.write(f"{time.perf_counter() - t}\n")


# ---------------------------------------------------------------- the parent


class _Worker:
    def __init__(self, side: str, args, threads: int):
        cmd = [sys.executable, __file__, "--worker", side, "--threads", str(threads), "--points", str(args.points),
               "--conv", args.conv, "--batch", *map(str, args.batch), "--models", *args.models,
               "--paper-repo", str(args.paper_repo)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.side = side
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"the {self.side} worker exited with code {code} (its error is above)")
        return line

    def time(self, key: str) -> float:
        self.proc.stdin.write(key + "\n")
        self.proc.stdin.flush()
        return float(self.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def compare(args, threads: int):
    """``({key: (paper s, ours s)}, {side: info})``: medians over interleaved rounds."""
    workers = {side: _Worker(side, args, threads) for side in ("paper", "ours")}
    try:
        ready = {side: json.loads(w.read()) for side, w in workers.items()}
        keys = ready["paper"]["ready"]
        assert keys == ready["ours"]["ready"], (keys, ready["ours"]["ready"])
        times = {key: {"paper": [], "ours": []} for key in keys}
        for r in range(args.rounds):
            order = ("paper", "ours") if r % 2 == 0 else ("ours", "paper")
            for key in keys:
                for side in order:
                    times[key][side].append(workers[side].time(key))
    finally:
        for w in workers.values():
            w.close()
    med = {key: (float(np.median(t["paper"])), float(np.median(t["ours"]))) for key, t in times.items()}
    return med, {side: r["info"] for side, r in ready.items()}


def _layers(name: str) -> str:
    """The layers of ``name`` in one line (both sides build these)."""
    spec = ARCHS[name]
    (c0, c1), boxes = spec["widths"], spec["boxes"]
    text = f"{IN_CHANNELS}->{c0} (box {boxes[0]}), +posenc, {c0}->{c1} (box {boxes[1]}, 1/4 of the points)"
    if spec["residual"]:
        text += f", +res {c1}->{c1} (box {boxes[2]})"
    return text + f", pool, {c1}->{HIDDEN}->{NUM_CLASSES}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paper-repo", default=None,
                        help=f"folder of the paper's code, fetched by you: {CLONE}")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--batch", type=int, nargs="+", default=[12, 48])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--models", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--conv", default="bspline", choices=("bspline", "mlp"), help="our conv kind")
    parser.add_argument("--points", type=int, default=1024,
                        help="input points per INR (the paper trains on 1024; its sampler is Sobol for powers of 2)")
    parser.add_argument("--worker", choices=("paper", "ours"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(args.worker, argparse.Namespace(**{**vars(args), "threads": args.threads[0]}))
        return
    args.paper_repo = check_paper_repo(args.paper_repo)
    if args.rounds < 1 or args.points < 4 or min(args.batch) < 1 or min(args.threads) < 1:
        parser.error("--rounds, --batch and --threads must be positive and --points at least 4")

    print(f"torch {torch.__version__}, paper's code from {args.paper_repo}; {args.points} fresh scrambled Sobol "
          f"points per step, {IN_CHANNELS} channels, {NUM_CLASSES} classes, AdamW; {args.rounds} interleaved rounds, "
          f"median\n")
    results = []
    info = None
    for threads in args.threads:
        med, info = compare(args, threads)
        results.append((threads, med))

    print("| model | side | layers | params | points per conv (in->out) |")
    print("|---|---|---|---:|---|")
    for name in args.models:
        label = ARCHS[name]["label"]
        print(f"| {label} | paper `{ARCHS[name]['paper']}` (MLPConv, 64 bins) | {_layers(name)} | "
              f"{info['paper'][name]['params']:,} | {info['paper'][name]['points']} |")
        print(f"| {label} | ours (`{args.conv}`, estimator mean) | the same | {info['ours'][name]['params']:,} | "
              f"{info['ours'][name]['points']} |")
    print()
    print("| model | batch | threads | paper ms | ours ms | paper / ours |")
    print("|---|---:|---:|---:|---:|---:|")
    for threads, med in results:
        for name in args.models:
            for b in args.batch:
                paper, ours = med[f"{name}/{b}"]
                print(f"| {ARCHS[name]['label']} | {b} | {threads} | {1e3 * paper:.1f} | {1e3 * ours:.1f} | "
                      f"{paper / ours:.1f}x |")


if __name__ == "__main__":
    main()
