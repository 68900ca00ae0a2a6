"""The LightningDataModule for INR datasets: INR-Nets get Fields (pixel models: :mod:`.pixel`).

The DataLoaders only read INR *parameters* (cheap, in workers if ``num_workers > 0``). The
INRs are evaluated after the batch reached the training device, in
:meth:`INRDataModule.on_after_batch_transfer`, i.e. in the training process right before
each step: one batched :func:`inrnet.inr.sample` call on the step's point set. Training
draws a fresh scramble of its sampler at every step (the same on every DDP rank, since
the samplers are seeded alike: one point set per global minibatch); evaluation uses a
fixed point set per setting, so neighbour searches are cached across batches.

Every INR's values are mapped from its family's ``value_range`` to ``[0, 1]``, so INRs of
different families (SIREN train, Fourier-feature test) and pixel images agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from inrnet.field import Field, PointSet
from inrnet.inr import INRBatch, sample
from inrnet.lightning.data import (INRDatasetLike, SubsetINRDataset, open_dataset, parse_sampler, random_subset,
                                   setting_name)
from inrnet.sampling import grid

__all__ = ["Batch", "INRDataModule", "IGNORE_INDEX"]

#: Label of void pixels in segmentation label maps; ignored by losses and metrics.
IGNORE_INDEX = 255
STAGES = ("train", "val", "test", "predict")


@dataclass
class Batch:
    """One step's input, on the training device.

    Attributes:
        inputs: a Field (values Tensor[B, N, C]) for INR-Nets, or images Tensor[B, C, *shape]
            for pixel models.
        target: class labels Tensor[B], or (segmentation) the labels at the query points
            Tensor[B, M].
        setting: name of the evaluation setting (the sampler, e.g. ``"grid_56x56"``).
        query: segmentation only: the M label coordinates the output is scored at.
    """

    inputs: Field | Tensor
    target: Tensor
    setting: str
    query: PointSet | None = None

    def __len__(self) -> int:
        return len(self.target)


class _ReadBatch:
    """DataLoader ``collate_fn``: a list of item indices -> ``(INRBatch, labels)``."""

    def __init__(self, dataset: INRDatasetLike):
        self.dataset = dataset

    def __call__(self, indices: list[int]) -> tuple[INRBatch, Tensor]:
        return self.dataset.batch(indices)


class INRDataModule(LightningDataModule):
    """INR dataset splits, batched, evaluated on each split's point sets.

    Args:
        dataset: a dataset name (:func:`inrnet.datasets.get_dataset`), a directory holding
            one stored INR dataset per split (``<dir>/<split>/manifest.json``), or a dict
            ``{split: INR dataset object}``.
        root: where named datasets live.
        train_split, val_split, test_split, predict_split: split names (``val_split=None``:
            hold out ``val_size`` training items, or no validation if 0; ``predict_split``
            defaults to ``test_split``).
        batch_size: INRs per training step (per process under DDP).
        eval_batch_size: INRs per evaluation step (default ``batch_size``).
        train_sampler: sampler spec of the training points, e.g. ``"sobol:1024"``.
        val_samplers, test_samplers: one evaluation setting (DataLoader) per spec; the
            validation default is the first test spec.
        train_label_points: segmentation: score each training step on this many random
            label pixels (default all).
        eval_label_stride: segmentation: score evaluation on every ``s``-th label pixel
            along each axis (default 1: all of them).
        limit_train, limit_val, limit_test: use a seeded random subset of this many items.
        val_size: training items held out for validation when ``val_split`` is None.
        shuffle: shuffle the training items each epoch (under DDP too: the DataModule shards
            the items itself, with a seeded ``DistributedSampler``).
        num_workers: DataLoader workers (they only read parameters).
        chunk_size: INRs per batched evaluation in :func:`~inrnet.inr.sample`.
        seed: seeds the subsets and the samplers.
    """

    def __init__(self, dataset: Any = "fashion_mnist", root: str | None = None, train_split: str = "train",
                 val_split: str | None = None, test_split: str = "test", predict_split: str | None = None,
                 batch_size: int = 64, eval_batch_size: int | None = None, train_sampler: str = "sobol:1024",
                 val_samplers: Sequence[str] | None = None, test_samplers: Sequence[str] = ("sobol:1024",),
                 train_label_points: int | None = None, eval_label_stride: int = 1, limit_train: int | None = None,
                 limit_val: int | None = None, limit_test: int | None = None, val_size: int = 0,
                 shuffle: bool = True, num_workers: int = 0, chunk_size: int = 64, seed: int = 0):
        super().__init__()
        for key, value in (("batch_size", batch_size), ("eval_label_stride", eval_label_stride),
                           ("chunk_size", chunk_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if isinstance(test_samplers, str) or isinstance(val_samplers, str):
            raise ValueError("test_samplers / val_samplers take a list of specs, e.g. ['grid:28x28', 'sobol:784']")
        if not test_samplers:
            raise ValueError("test_samplers needs at least one sampler spec")
        self.dataset, self.root = dataset, root
        self.splits = {"train": train_split, "val": val_split, "test": test_split,
                       "predict": predict_split or test_split}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.specs = {"train": [train_sampler], "val": list(val_samplers or test_samplers[:1]),
                      "test": list(test_samplers), "predict": list(test_samplers[:1])}
        for specs in self.specs.values():
            for spec in specs:
                parse_sampler(spec)  # a malformed spec fails here, before any data is read
        self.train_label_points, self.eval_label_stride = train_label_points, eval_label_stride
        self.limits = {"train": limit_train, "val": limit_val, "test": limit_test, "predict": limit_test}
        self.val_size, self.shuffle, self.num_workers = val_size, shuffle, num_workers
        self.chunk_size, self.seed = chunk_size, seed
        self.data: dict[str, INRDatasetLike] = {}
        self._samplers: dict[tuple, Any] = {}
        self._queries: dict[tuple, tuple[PointSet, Tensor]] = {}
        self._label_rng = torch.Generator().manual_seed(seed)
        if val_split is None and not val_size:
            self.val_dataloader = None  # no validation: Lightning skips the loop

    # datasets ----------------------------------------------------------------------
    def _open(self, split: str) -> INRDatasetLike:
        if isinstance(self.dataset, dict):
            if split not in self.dataset:
                raise ValueError(f"no split {split!r} in the given datasets; splits: {sorted(self.dataset)}")
            return self.dataset[split]
        return open_dataset(self.dataset, split, self.root)

    def setup(self, stage: str | None = None) -> None:
        """Open the splits the stage needs (``fit``: train and val; ``validate``; ``test``; ``predict``).

        Raises:
            ValueError: an unknown dataset or split, or splits whose INRs disagree.
        """
        parts = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                 "predict": ("predict",)}.get(stage, STAGES)
        for part in parts:
            if part in self.data:
                continue
            if part in ("train", "val") and self.splits["val"] is None:
                if self.val_size:
                    self._hold_out()
                elif part == "train":
                    self.data["train"] = random_subset(self._open(self.splits["train"]), self.limits["train"],
                                                       self.seed)
                continue
            self.data[part] = random_subset(self._open(self.splits[part]), self.limits[part], self.seed)
        self.check_compatible()

    def _hold_out(self) -> None:
        """Split ``val_size`` seeded random items off the training split for validation."""
        full = random_subset(self._open(self.splits["train"]), self.limits["train"], self.seed)
        if not 0 < self.val_size < len(full):
            raise ValueError(f"val_size must be in (0, {len(full)}) for a training set of {len(full)}, "
                             f"got {self.val_size}")
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(self.seed + 1))
        self.data["val"] = SubsetINRDataset(full, order[:self.val_size].sort().values)
        self.data["train"] = SubsetINRDataset(full, order[self.val_size:].sort().values)

    def check_compatible(self) -> None:
        """Raise ``ValueError`` unless every opened split has one coordinate dimension and channel count."""
        specs = {part: (ds.family.in_features, ds.family.out_features) for part, ds in self.data.items()}
        if len(set(specs.values())) > 1:
            raise ValueError("the splits' INRs disagree on (coordinate dim, channels): "
                             + ", ".join(f"{p}: {s}" for p, s in specs.items()))

    def input_spec(self, probe: int = 16) -> dict[str, Any]:
        """What the model will see, for checks before training (after :meth:`setup`).

        Class labels are read in full; label maps (large) from the first ``probe`` items of
        each split.

        Returns:
            ``{"dim": d, "channels": C, "label_dims": 0 (classes) or 2 (label maps), "max_label": int}``
            (``max_label`` ignores :data:`IGNORE_INDEX`).
        """
        if not self.data:
            raise RuntimeError("call setup() before input_spec()")
        ds = next(iter(self.data.values()))
        label_dims = ds.batch([0])[1].dim() - 1
        labels = [(d.labels if label_dims == 0 else d.batch(list(range(min(probe, len(d)))))[1]).flatten()
                  for d in self.data.values()]
        labels = torch.cat(labels)
        labels = labels[labels != IGNORE_INDEX]
        return {"dim": ds.family.in_features, "channels": ds.family.out_features, "label_dims": label_dims,
                "max_label": int(labels.max()) if len(labels) else -1}

    # loaders -----------------------------------------------------------------------
    def _loader(self, part: str, train: bool = False) -> DataLoader:
        if part not in self.data:
            self.setup({"train": "fit", "val": "validate"}.get(part, part))
        if part not in self.data:
            raise ValueError(f"no {part} data: set {part}_split" + (" or val_size" if part == "val" else ""))
        ds = self.data[part]
        shuffle, sampler = train and self.shuffle, None
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:  # our own, so shuffle=False holds under DDP too
            sampler = DistributedSampler(range(len(ds)), num_replicas=trainer.world_size, rank=trainer.global_rank,
                                         shuffle=shuffle, seed=self.seed)
        return DataLoader(range(len(ds)), batch_size=self.batch_size if train else self.eval_batch_size,
                          shuffle=shuffle if sampler is None else False, sampler=sampler, drop_last=False,
                          num_workers=self.num_workers, collate_fn=_ReadBatch(ds),
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader("val") for _ in self.specs["val"]]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader("test") for _ in self.specs["test"]]

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    # on the device ------------------------------------------------------------------
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], INRBatch):
            return batch[0].to(device), batch[1].to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _stage(self) -> str:
        trainer = self.trainer
        if trainer is None or trainer.training:
            return "train"
        if trainer.sanity_checking or trainer.validating:
            return "val"
        return "test" if trainer.testing else "predict"

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], INRBatch):
            return self.make_batch(batch[0], batch[1], self._stage(), dataloader_idx)
        return batch

    def sampler(self, stage: str, index: int = 0, dim: int = 2, device=None):
        """The :class:`~inrnet.sampling.Sampler` of evaluation setting ``index`` of ``stage``."""
        key = (stage, index, dim, str(device))
        if key not in self._samplers:
            train = stage == "train"
            self._samplers[key] = parse_sampler(self.specs[stage][index], dim, seed=self.seed + (0 if train else 1),
                                                rescramble=train, device=device)
        return self._samplers[key]

    def make_batch(self, inrs: INRBatch, labels: Tensor, stage: str = "train", index: int = 0) -> Batch:
        """Evaluate INRs on the stage's point set (on their device) into a :class:`Batch`.

        Args:
            inrs: B INRs.
            labels: Tensor[B] or label maps Tensor[B, H, W].
            stage: ``"train"``, ``"val"``, ``"test"`` or ``"predict"``.
            index: the evaluation setting (DataLoader index) of the stage.
        """
        sampler = self.sampler(stage, index, inrs.family.in_features, inrs.device)
        field = sample(inrs, sampler(), chunk_size=self.chunk_size)
        lo, hi = inrs.family.value_range
        field = field.replace((field.values - lo) * (1.0 / (hi - lo)))  # (B, N, C) in [0, 1]
        name = setting_name(self.specs[stage][index])
        if labels.dim() == 1:
            return Batch(self.format_inputs(field, sampler), labels, name)
        query, target = self._label_points(labels, stage)
        return Batch(self.format_inputs(field, sampler), target, name, query)

    def format_inputs(self, field: Field, sampler) -> Field | Tensor:
        """What the model takes: the Field itself for INR-Nets."""
        return field

    def _label_points(self, labels: Tensor, stage: str) -> tuple[PointSet, Tensor]:
        """The query points and the labels there: PointSet of M coords, Tensor[B, M]."""
        shape = tuple(labels.shape[1:])
        flat = labels.flatten(1).long()  # (B, H * W)
        if stage == "train" and self.train_label_points and self.train_label_points < flat.shape[1]:
            pick = torch.randperm(flat.shape[1], generator=self._label_rng)[:self.train_label_points]
            pick = pick.to(labels.device)
            coords = grid(shape, device=labels.device)[pick]  # (M, d)
            return PointSet(coords), flat[:, pick]
        s = 1 if stage == "train" else self.eval_label_stride
        key = (shape, s, str(labels.device))
        if key not in self._queries:
            keep = torch.zeros(shape, dtype=torch.bool, device=labels.device)
            keep[tuple(slice(None, None, s) for _ in shape)] = True
            index = keep.flatten().nonzero().squeeze(1)  # (M,)
            self._queries[key] = (PointSet(grid(shape, device=labels.device)[index]), index)
        query, index = self._queries[key]
        return query, flat[:, index]
