"""The same config under Lightning DDP (2 CPU processes, gloo) matches a single-process run.

The training set holds 4 INRs, each twice, in pairs (items 2k and 2k + 1 are the same), read
in order. DDP's sampler gives rank 0 the even items and rank 1 the odd ones, so each of the
2 processes sees the 4 distinct INRs with half the global batch, while the single process
sees all 8: batch statistics, mean losses and averaged gradients agree, and both use the
same point set per step (the samplers are seeded alike). So the trained weights and the
(synchronised) validation metrics must match to float tolerance. The run uses SGD: Adam
turns the float noise of gradients that are zero in exact arithmetic (a conv bias before
a batch norm) into steps of size lr, which would hide the comparison.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inrnet.inr import PixelINR, save_inrs

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "fashion_mnist" / "inrnet2.yaml"


def _paired_data(root: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        x = torch.rand(4, 1, 8, 8, generator=g) + torch.arange(4).view(4, 1, 1, 1) * 0.3
        y = torch.arange(4)
        save_inrs(root / split, PixelINR(x.repeat_interleave(2, 0), "linear"), y.repeat_interleave(2))
    return root


def _fit(data: Path, out: Path, devices: int) -> tuple[dict, dict]:
    args = [sys.executable, "-m", "inrnet.cli", "fit", "--config", str(CONFIG), "--data.dataset", str(data),
            "--data.val_split", "val", "--data.val_size", "0", "--data.shuffle", "false",
            "--data.batch_size", str(8 // devices), "--data.eval_batch_size", str(8 // devices),
            "--data.train_sampler", "sobol:64", "--data.val_samplers", "[grid:8x8]",
            "--model.init_args.model_kwargs", "{in_channels: 1, num_classes: 4, widths: [4, 8], hidden: 8, "
            "base_resolution: 8}", "--model.init_args.lr", "0.05", "--model.init_args.optimizer", "sgd",
            "--model.init_args.scheduler", "constant",
            "--trainer.max_steps", "3", "--trainer.log_every_n_steps", "1", "--trainer.accelerator", "cpu",
            "--trainer.devices", str(devices), "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(out)]
    if devices > 1:
        args += ["--trainer.strategy", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (ckpt,) = out.rglob("last.ckpt")
    rows = list(csv.DictReader(open(next(out.rglob("metrics.csv")))))
    final = {k: float(v) for r in rows for k, v in r.items() if v and k.startswith("val/")}
    return torch.load(ckpt, map_location="cpu", weights_only=True), final


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    data = _paired_data(tmp_path / "data")
    one, one_val = _fit(data, tmp_path / "one", devices=1)
    two, two_val = _fit(data, tmp_path / "two", devices=2)
    # SGD momentum buffers hold the accumulated gradients: equal, and large enough to matter
    m1 = [s["momentum_buffer"] for s in one["optimizer_states"][0]["state"].values()]
    m2 = [s["momentum_buffer"] for s in two["optimizer_states"][0]["state"].values()]
    assert max(float(m.abs().max()) for m in m1) > 1e-2
    for a, b in zip(m1, m2):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    for key, value in one["state_dict"].items():
        if key.endswith("running_var"):
            # rank 0's buffer (DDP broadcasts it) from its half batch: the unbiased variance
            # correction n / (n - 1) differs slightly with n = 4 x 64 vs 8 x 64 values
            torch.testing.assert_close(two["state_dict"][key], value, rtol=1e-2, atol=1e-4)
        else:
            torch.testing.assert_close(two["state_dict"][key], value, rtol=1e-5, atol=1e-6)
    assert set(one_val) == {"val/loss/grid_8x8", "val/top1/grid_8x8", "val/top3/grid_8x8"} == set(two_val)
    for key in one_val:
        assert two_val[key] == pytest.approx(one_val[key], rel=1e-5, abs=1e-6), key


class _FakeTrainer:
    """What the DataModule asks a Trainer when it builds loaders."""

    training = True

    def __init__(self, world_size, global_rank):
        self.world_size, self.global_rank = world_size, global_rank


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_share_points_and_split_items(memory_data, shuffle):
    """The fast half of the DDP test: what each of 2 ranks would get, without processes."""
    from inrnet.lightning import INRDataModule
    ranks = []
    for rank in range(2):
        dm = INRDataModule(memory_data, batch_size=4, train_sampler="sobol:32", shuffle=shuffle, seed=5)
        dm.trainer = _FakeTrainer(2, rank)
        dm.setup("fit")
        loader = dm.train_dataloader()
        steps = [dm.on_after_batch_transfer(dm.transfer_batch_to_device(b, torch.device("cpu"), 0), 0)
                 for b in loader]
        ranks.append((list(loader.sampler), steps))
    (idx0, steps0), (idx1, steps1) = ranks
    assert sorted(idx0 + idx1) == list(range(16))  # disjoint halves covering the epoch
    if not shuffle:
        assert idx0 == list(range(0, 16, 2)) and idx1 == list(range(1, 16, 2))
    for a, b in zip(steps0, steps1):  # one point set per global step, on every rank
        assert torch.equal(a.inputs.points.coords, b.inputs.points.coords)
