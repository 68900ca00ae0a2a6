"""The LightningDataModule for INR datasets: INR-Nets get Fields (pixel models: [`inrnet.lightning.pixel`][inrnet.lightning.pixel]).

The DataLoaders only read INR *parameters* (cheap, in workers if ``num_workers > 0``). The
INRs are evaluated after the batch reached the training device, in
`INRDataModule.on_after_batch_transfer`, i.e. in the training process right before
each step: one batched [`inrnet.inr.sample`][inrnet.inr.evaluate.sample] call on the step's point set. Training
draws a fresh scramble of its sampler at every step (the same on every DDP rank, since
the samplers are seeded alike: one point set per global minibatch); evaluation uses a
fixed point set per setting, so neighbour searches are cached across batches.

Training batches can be augmented (``train_transforms``, ``point_dropout``): the INRs are
evaluated at randomly transformed coordinates, ``f o T`` on the untransformed points, and
segmentation labels are looked up at the same ``T`` of their query points.

Checkpoints hold where training stands in all of this (the pass over the data and the
batch within it, the sampler's scramble counter, the label-point and augmentation
generators), so
``fit(ckpt_path=...)`` continues the same sequence of batches and point sets.

Every INR's values are mapped from its family's ``value_range`` to ``[0, 1]``, so INRs of
different families (SIREN train, Fourier-feature test) and pixel images agree.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
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
from inrnet.nn.augment import Compose, PointDropout, drop_points
from inrnet.sampling import grid

__all__ = ["Batch", "INRDataModule", "IGNORE_INDEX"]

IGNORE_INDEX = 255
"""Label of void pixels in segmentation label maps; ignored by losses and metrics."""
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


class _EpochOrder(DistributedSampler):
    """The training order: this rank's share of a permutation of ``(seed, epoch)``, from item ``start`` on.

    A ``DistributedSampler``, so that Lightning leaves it in place under DDP too;
    ``_TrainLoader`` sets its epoch and ``start`` at the beginning of every pass.
    """

    def __init__(self, n: int, num_replicas: int, rank: int, shuffle: bool, seed: int):
        super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)


class _TrainLoader(DataLoader):
    """The training DataLoader, resumable mid-epoch: ``state_dict()`` is ``{"epoch": e, "batches": b}``.

    Pass ``e`` over the data (the ``e``-th ``iter()``) follows the order of epoch ``e`` of its
    ``_EpochOrder``, whatever epoch Lightning sets; ``b`` counts the batches the pass under
    way handed out, i.e. trained on (Lightning does not prefetch from a loader of known
    length; workers' prefetching does not count). Lightning saves this state in checkpoints
    and hands it back to ``load_state_dict`` when ``fit(ckpt_path=...)`` resumes; the next
    pass then continues pass ``e`` at its batch ``b`` (or starts pass ``e + 1`` if ``e`` was
    done). Counting passes, not Lightning's epochs, matters after a ``max_steps`` stop:
    Lightning closes the interrupted epoch, then resumes with an "epoch" as long as the
    rest of it.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._position: dict[str, int] | None = None  # the pass under way; None before the first
        self._resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator[tuple[INRBatch, Tensor]]:
        # A generator, so this runs at the first next(): iter() without a next() starts no pass.
        if self._resume is not None:
            epoch, skip = self._resume["epoch"], self._resume["batches"]
            if skip >= len(self):
                epoch, skip = epoch + 1, 0
        else:
            epoch, skip = (0 if self._position is None else self._position["epoch"] + 1), 0
        self._resume = None
        if isinstance(self.sampler, _EpochOrder):
            self.sampler.set_epoch(epoch)
            self.sampler.start = skip * self.batch_size
            batches = super().__iter__()
        else:  # a sampler Lightning put in (overfit_batches): skip by reading
            batches = itertools.islice(super().__iter__(), skip, None)
        self._position = {"epoch": epoch, "batches": skip}
        for batch in batches:
            self._position["batches"] += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return dict(self._position or {"epoch": 0, "batches": 0})

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not isinstance(state, dict) or not all(isinstance(state.get(k), int) and state[k] >= 0
                                                  for k in ("epoch", "batches")):
            raise ValueError(f"a training DataLoader state is {{'epoch': int, 'batches': int}}, got {state!r}")
        self._resume = {"epoch": state["epoch"], "batches": state["batches"]}


class INRDataModule(LightningDataModule):
    """INR dataset splits, batched, evaluated on each split's point sets.

    Args:
        dataset: a dataset name ([`inrnet.datasets.get_dataset`][inrnet.datasets.get_dataset]), a directory holding
            one stored INR dataset per split (``<dir>/<split>/manifest.json``), or a dict
            ``{split: INR dataset object}``.
        root: where named datasets live.
        train_split: the training split's name.
        val_split: the validation split's name; ``None`` holds out ``val_size`` training
            items, or validates nothing if ``val_size`` is 0.
        test_split: the test split's name.
        predict_split: the prediction split's name (default ``test_split``).
        batch_size: INRs per training step (per process under DDP).
        eval_batch_size: INRs per evaluation step (default ``batch_size``).
        train_sampler: sampler spec of the training points, e.g. ``"sobol:1024"``.
        val_samplers: one validation setting (DataLoader) per spec (default: the first
            of ``test_samplers``).
        test_samplers: one test setting (DataLoader) per spec.
        train_label_points: segmentation: score each training step on this many random
            label pixels (default all).
        eval_label_stride: segmentation: score evaluation on every ``s``-th label pixel
            along each axis (default 1: all of them).
        limit_train: use a seeded random subset of this many training items.
        limit_val: likewise for validation.
        limit_test: likewise for testing.
        val_size: training items held out for validation when ``val_split`` is None.
        shuffle: shuffle the training items each epoch: pass ``e`` over them follows the
            permutation seeded by ``(seed, e)`` (the global RNG plays no part), under DDP
            too, where the DataModule shards the items itself like a ``DistributedSampler``.
        num_workers: DataLoader workers (they only read parameters).
        chunk_size: INRs per batched evaluation in [`sample`][inrnet.inr.evaluate.sample].
        seed: seeds the subsets, the data order, the samplers and the augmentations.
        train_transforms: coordinate augmentations of training batches, applied in order (e.g.
            [`RandomFlip`][inrnet.nn.augment.RandomFlip], [`RandomAffine`][inrnet.nn.augment.RandomAffine];
            in a config, ``class_path``/``init_args`` entries): callables mapping coords Tensor[B, N, d]
            to Tensor[B, N, d], one draw per INR. Each step's INRs are evaluated at ``T(x)``
            ([`sample`][inrnet.inr.evaluate.sample]'s ``transform``) on the untransformed points ``x``; segmentation
            targets are the labels at ``T`` of the query points (nearest label pixel,
            [`IGNORE_INDEX`][inrnet.lightning.datamodule.IGNORE_INDEX] outside the domain). Their ``generator`` must be
            left unset: the DataModule sets its own, seeded by ``seed`` and saved in
            checkpoints. Evaluation batches are never augmented.
        point_dropout: drop each training point with this probability before evaluating the
            INRs ([`drop_points`][inrnet.nn.augment.drop_points], weights rescaled; in ``[0, 1)``), from the same
            generator. In a model, use [`PointDropout`][inrnet.nn.augment.PointDropout] instead.
    """

    def __init__(self, dataset: Any = "fashion_mnist", root: str | None = None, train_split: str = "train",
                 val_split: str | None = None, test_split: str = "test", predict_split: str | None = None,
                 batch_size: int = 64, eval_batch_size: int | None = None, train_sampler: str = "sobol:1024",
                 val_samplers: Sequence[str] | None = None, test_samplers: Sequence[str] = ("sobol:1024",),
                 train_label_points: int | None = None, eval_label_stride: int = 1, limit_train: int | None = None,
                 limit_val: int | None = None, limit_test: int | None = None, val_size: int = 0,
                 shuffle: bool = True, num_workers: int = 0, chunk_size: int = 64, seed: int = 0,
                 train_transforms: list[Callable] | None = None, point_dropout: float = 0.0):
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
        self._sampler_states: dict[str, dict[str, int]] = {}  # from a checkpoint, for samplers made later
        self._augment_rng = torch.Generator().manual_seed(seed + 2)  # seed, seed + 1: samplers, hold-out
        self.train_transforms = self._own(list(train_transforms or []))
        self._augment = Compose(self.train_transforms) if self.train_transforms else None
        if not (isinstance(point_dropout, (int, float)) and 0.0 <= point_dropout < 1.0):
            raise ValueError(f"point_dropout must be in [0, 1), got {point_dropout!r}")
        self.point_dropout = float(point_dropout)
        if val_split is None and not val_size:
            self.val_dataloader = None  # no validation: Lightning skips the loop

    def _own(self, transforms: list[Callable]) -> list[Callable]:
        """Point every transform's (and nested ``Compose``'s) ``generator`` at the DataModule's one."""
        for t in transforms:
            if isinstance(t, PointDropout):
                raise ValueError("PointDropout acts on Fields, not coordinates: use point_dropout=p of the "
                                 "DataModule, or put it in the model")
            if not callable(t):
                raise TypeError(f"train_transforms must be callables coords -> coords, got {type(t).__name__}")
            if hasattr(t, "generator"):
                if t.generator is not None:
                    raise ValueError(f"{t!r} has a generator of its own; leave it unset: the DataModule draws "
                                     "augmentations from its generator (seeded by seed, saved in checkpoints)")
                t.generator = self._augment_rng
            self._own(list(getattr(t, "transforms", [])))
        return transforms

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
        """What the model will see, for checks before training (after [`setup`][inrnet.lightning.datamodule.INRDataModule.setup]).

        Class labels are read in full; label maps (large) from the first ``probe`` items of
        each split.

        Returns:
            ``{"dim": d, "channels": C, "label_dims": 0 (classes) or 2 (label maps), "max_label": int}``
            (``max_label`` ignores [`IGNORE_INDEX`][inrnet.lightning.datamodule.IGNORE_INDEX]).
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
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        # Our own samplers, so shuffle=False holds under DDP too. A generator of its own keeps
        # each pass from drawing the workers' base seed from the global RNG (dropout's).
        kwargs = {"drop_last": False, "num_workers": self.num_workers, "collate_fn": _ReadBatch(ds),
                  "persistent_workers": self.num_workers > 0, "generator": torch.Generator().manual_seed(self.seed)}
        if train:
            return _TrainLoader(range(len(ds)), batch_size=self.batch_size,
                                sampler=_EpochOrder(len(ds), replicas, rank, self.shuffle, self.seed), **kwargs)
        sampler = DistributedSampler(range(len(ds)), replicas, rank, shuffle=False) if replicas > 1 else None
        return DataLoader(range(len(ds)), batch_size=self.eval_batch_size, sampler=sampler, **kwargs)

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
        """The [`Sampler`][inrnet.sampling.sampler.Sampler] of evaluation setting ``index`` of ``stage``."""
        key = (stage, index, dim, str(device))
        if key not in self._samplers:
            train = stage == "train"
            self._samplers[key] = parse_sampler(self.specs[stage][index], dim, seed=self.seed + (0 if train else 1),
                                                rescramble=train, device=device)
            if f"{stage}/{index}" in self._sampler_states:
                self._samplers[key].load_state_dict(self._sampler_states[f"{stage}/{index}"])
        return self._samplers[key]

    # checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What training has drawn so far; Lightning saves it in every checkpoint.

        Returns:
            ``{"samplers": {"train/0": {"calls": c}}, "label_rng": ByteTensor, "augment_rng":
            ByteTensor}``: the training sampler's scramble counter and the states of the
            generators that pick the segmentation label points and draw the augmentations.
            (The data order is the training DataLoader's state.)
        """
        samplers: dict[str, dict[str, int]] = {}
        for (stage, index, _, _), sampler in self._samplers.items():
            state = sampler.state_dict()
            # One per setting unless make_batch ran on a second device too: keep the one training advanced.
            if stage == "train" and state["calls"] >= samplers.get(f"{stage}/{index}", {"calls": -1})["calls"]:
                samplers[f"{stage}/{index}"] = state
        return {"samplers": samplers, "label_rng": self._label_rng.get_state(),
                "augment_rng": self._augment_rng.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a `state_dict()`; ``fit(ckpt_path=...)`` calls it before training resumes.

        Raises:
            ValueError: ``state_dict`` is not of that form.
        """
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("samplers"), dict) \
                or not isinstance(state_dict.get("label_rng"), Tensor):
            raise ValueError("an INRDataModule state is {'samplers': {setting: Sampler state}, 'label_rng': "
                             f"ByteTensor}}, got {state_dict!r}")
        self._sampler_states = dict(state_dict["samplers"])
        for (stage, index, _, _), sampler in self._samplers.items():
            if f"{stage}/{index}" in self._sampler_states:
                sampler.load_state_dict(self._sampler_states[f"{stage}/{index}"])
        self._label_rng.set_state(state_dict["label_rng"])
        if "augment_rng" in state_dict:  # absent from checkpoints made before augmentation existed
            self._augment_rng.set_state(state_dict["augment_rng"])

    def make_batch(self, inrs: INRBatch, labels: Tensor, stage: str = "train", index: int = 0) -> Batch:
        """Evaluate INRs on the stage's point set (on their device) into a [`Batch`][inrnet.lightning.datamodule.Batch].

        Args:
            inrs: B INRs.
            labels: Tensor[B] or label maps Tensor[B, H, W].
            stage: ``"train"``, ``"val"``, ``"test"`` or ``"predict"``.
            index: the evaluation setting (DataLoader index) of the stage.
        """
        sampler = self.sampler(stage, index, inrs.family.in_features, inrs.device)
        points, train = sampler(), stage == "train"
        if train and self.point_dropout:
            points = drop_points(points, self.point_dropout, self._augment_rng)
        query, target = (None, labels) if labels.dim() == 1 else self._label_points(labels, stage)
        transform = None
        if train and self._augment is not None:
            moved = self._augmented_coords(points, query, len(inrs))  # (B, N [+ M], d)

            def transform(coords: Tensor) -> Tensor:
                return moved[:, :points.n]  # (B, N, d): T_b(coords), the draw the label points got too
            if query is not None:
                target = _labels_at(labels, moved[:, points.n:])  # (B, M)
        field = sample(inrs, points, chunk_size=self.chunk_size, transform=transform)
        lo, hi = inrs.family.value_range
        field = field.replace((field.values - lo) * (1.0 / (hi - lo)))  # (B, N, C) in [0, 1]
        return Batch(self.format_inputs(field, sampler), target, setting_name(self.specs[stage][index]), query)

    def _augmented_coords(self, points: PointSet, query: PointSet | None, b: int) -> Tensor:
        """One draw of the training transforms per INR, at the input and the label points together.

        Returns:
            Tensor[B, N + M, d]: ``T_b`` of the N input coords, then of the M query coords.
        """
        coords = points.coords if query is None else torch.cat([points.coords, query.coords.to(points.coords)])
        coords = coords.unsqueeze(0).expand(b, -1, -1)  # (B, N + M, d): one leading index per INR
        moved = self._augment(coords)
        if not isinstance(moved, Tensor) or moved.shape != coords.shape:
            raise ValueError(f"train_transforms must map coords {tuple(coords.shape)} ([B, N, d]) to the same "
                             f"shape, got {tuple(getattr(moved, 'shape', ())) or type(moved).__name__}")
        return moved.to(points.device)

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


def _labels_at(labels: Tensor, coords: Tensor) -> Tensor:
    """The label of the cell of each map holding each point; ``IGNORE_INDEX`` outside ``[-1, 1]^d``.

    Args:
        labels (Tensor[B, *shape]): label maps, cell ``i`` of axis ``k`` centred at
            ``-1 + (2 i + 1) / shape[k]`` as in [`grid`][inrnet.sampling.points.grid].
        coords (Tensor[B, M, d]): one point set per map.

    Returns:
        Tensor[B, M] (long).
    """
    shape = torch.tensor(labels.shape[1:], device=coords.device)  # (d,)
    cell = torch.floor((coords.double() + 1.0) * 0.5 * shape).long()  # (B, M, d)
    inside = ((cell >= 0) & (cell < shape)).all(-1)  # (B, M)
    cell = torch.minimum(cell.clamp(min=0), shape - 1)
    strides = torch.tensor([math.prod(labels.shape[2 + k:]) for k in range(len(shape))], device=coords.device)
    flat = labels.flatten(1).long().to(coords.device)  # (B, H * W)
    out = flat.gather(1, (cell * strides).sum(-1))  # (B, M)
    return torch.where(inside, out, torch.full_like(out, IGNORE_INDEX)).to(labels.device)
