"""Lightning on the device: a few training steps and a test step of an INR-Net classifier
and segmenter, against the same steps written out by hand in float64 on the CPU."""

import copy
import itertools

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from inrnet.lightning import IGNORE_INDEX, INRClassifier, INRDataModule, INRSegmenter, InMemoryINRDataset

pytestmark = pytest.mark.gpu

D64 = torch.float64
STEPS = 3  # two batches per epoch: the third step starts a second epoch
SGD = {"lr": 0.05, "weight_decay": 1e-2, "optimizer": "sgd"}  # SGD: errors stay linear in the gradient's


def _trainer(device: torch.device) -> L.Trainer:
    return L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_steps=STEPS,
                     logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False)


def _classification_data() -> dict:
    """16 training and 8 test 8x8 images whose brightness tells their class (4 classes), as linear PixelINRs."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(24) % 4
    images = 0.2 * torch.rand(24, 1, 8, 8, generator=g) + 0.2 * labels.view(-1, 1, 1, 1)
    return {"train": InMemoryINRDataset.from_images(images[:16], labels[:16]),
            "test": InMemoryINRDataset.from_images(images[16:], labels[16:])}


def _segmentation_data() -> dict:
    """8 training and 4 test 6x6 images with 12x12 label maps of 3 classes (first row void)."""
    g = torch.Generator().manual_seed(1)
    maps = torch.randint(0, 3, (12, 12, 12), generator=g)
    maps[:, 0] = IGNORE_INDEX
    images = torch.rand(12, 1, 6, 6, generator=g)
    return {"train": InMemoryINRDataset.from_images(images[:8], maps[:8]),
            "test": InMemoryINRDataset.from_images(images[8:], maps[8:])}


def _by_hand(task, data: dict, dm_kwargs: dict, loss_of) -> tuple[torch.nn.Module, list]:
    """``STEPS`` SGD steps of ``task``'s backbone in float64 on the CPU, on the batches a
    fresh DataModule makes, then its test batches in eval mode.

    Returns:
        The trained backbone and ``[(batch, output)]`` of the test split.
    """
    model = copy.deepcopy(task.model).double()
    opt = torch.optim.SGD(model.parameters(), lr=SGD["lr"], momentum=0.9, weight_decay=SGD["weight_decay"])
    dm = INRDataModule(data, **dm_kwargs)
    dm.setup("fit")
    epochs = itertools.chain.from_iterable(dm.train_dataloader() for _ in range(STEPS))
    for inrs, labels in itertools.islice(epochs, STEPS):
        batch = dm.make_batch(inrs, labels, "train")
        loss = loss_of(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    dm.setup("test")
    with torch.no_grad():
        tested = [(batch, loss_of(model, batch, reduce=False)) for batch in
                  (dm.make_batch(inrs, labels, "test") for inrs, labels in dm.test_dataloader()[0])]
    return model, tested


def _assert_same_state(trained: torch.nn.Module, reference: torch.nn.Module, close) -> None:
    for (name, t), (_, r) in zip(trained.state_dict().items(), reference.state_dict().items()):
        if t.is_floating_point():
            close(t, r)
        else:
            assert torch.equal(t.cpu(), r), name


def _fit_test_and_compare(task, data, dm_kwargs, loss_of, device, close):
    """Fit ``task`` on the device, check its state against the float64 steps by hand, test it.

    Returns:
        The test metrics, and the by-hand test batch and its logits to check them against.
    """
    reference, tested = _by_hand(task, data, dm_kwargs, loss_of)
    trainer = _trainer(device)
    trainer.fit(task, INRDataModule(data, **dm_kwargs))
    assert trainer.global_step == STEPS
    _assert_same_state(task.model, reference, close)
    metrics = trainer.test(task, INRDataModule(data, **dm_kwargs), verbose=False)[0]
    (batch, logits), = tested
    return metrics, batch, logits


@pytest.mark.parametrize("model", ["inrnet2", "inrnet4"])
def test_classifier_fit_and_test_on_the_device(model, device, close):
    data = _classification_data()
    dm_kwargs = dict(batch_size=8, shuffle=False, train_sampler="sobol:64", test_samplers=["sobol:64"])
    task = INRClassifier(model, {"widths": [4, 8], "hidden": 8, "num_classes": 4, "base_resolution": 8}, **SGD)

    def loss_of(net, batch, reduce=True):
        logits = net(batch.inputs.to(dtype=D64))
        return F.cross_entropy(logits, batch.target) if reduce else logits
    metrics, batch, logits = _fit_test_and_compare(task, data, dm_kwargs, loss_of, device, close)
    close(torch.tensor(metrics["test/loss/sobol_64"]), F.cross_entropy(logits, batch.target))
    assert metrics["test/top1/sobol_64"] == pytest.approx((logits.argmax(1) == batch.target).double().mean().item())


@pytest.mark.parametrize("model", ["inrnet3", "inrnet5"])
def test_segmenter_fit_and_test_on_the_device(model, device, close):
    data = _segmentation_data()
    dm_kwargs = dict(batch_size=4, shuffle=False, train_sampler="sobol:64", test_samplers=["sobol:64"],
                     train_label_points=40)
    task = INRSegmenter(model, {"in_channels": 1, "num_classes": 3, "width": 4, "base_resolution": 6}, **SGD)

    def loss_of(net, batch, reduce=True):
        logits = net(batch.inputs.to(dtype=D64), batch.query.to(dtype=D64)).values  # (B, M, K)
        return F.cross_entropy(logits.transpose(1, 2), batch.target, ignore_index=IGNORE_INDEX) if reduce else logits
    metrics, batch, logits = _fit_test_and_compare(task, data, dm_kwargs, loss_of, device, close)
    valid = batch.target != IGNORE_INDEX
    assert batch.query.n == 144 and bool(valid.any())
    loss = F.cross_entropy(logits.transpose(1, 2), batch.target, ignore_index=IGNORE_INDEX)
    close(torch.tensor(metrics["test/loss/sobol_64"]), loss)
    pixacc = (logits.argmax(-1) == batch.target)[valid].double().mean().item()
    assert metrics["test/pixacc/sobol_64"] == pytest.approx(pixacc)
