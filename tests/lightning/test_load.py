"""Loading checkpoints: only tensors and plain containers are ever unpickled."""

import lightning as L
import pytest
import torch

from inrnet.lightning import INRClassifier, INRDataModule, load_task

SMALL = {"widths": [4, 8], "hidden": 8, "num_classes": 4, "base_resolution": 8}


class _Payload:
    """Unpickles as ``exec(code)``: what a crafted checkpoint would run on a plain ``torch.load``."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def _real_checkpoint(memory_data, tmp_path):
    """The checkpoint ``ModelCheckpoint`` writes after one ``Trainer.fit`` step."""
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        max_steps=1, default_root_dir=tmp_path)
    model = INRClassifier("inrnet2", SMALL)
    trainer.fit(model, INRDataModule(memory_data, train_sampler="sobol:32"))
    (path,) = tmp_path.rglob("*.ckpt")
    return model, path


def test_a_crafted_checkpoint_never_runs_its_payload(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"inrnet": {"task": "INRClassifier", "model": {"name": "inrnet2"}},
                "state_dict": {"w": _Payload(f"open({str(marker)!r}, 'w').close()")}}, path)
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ValueError, match=r"evil\.ckpt.*GLOBAL exec.*refuses to unpickle"):
        load_task(path)
    assert not marker.exists()


def test_real_checkpoints_load_with_weights_only_every_time(memory_data, tmp_path, monkeypatch):
    model, path = _real_checkpoint(memory_data, tmp_path)
    assert torch.load(path, weights_only=True)["inrnet"]["task"] == "INRClassifier"
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)
    monkeypatch.setattr(torch, "load", spy)
    loaded = load_task(path)
    assert len(calls) >= 2 and all(w is True for w in calls)  # load_task's own read and Lightning's
    assert type(loaded) is INRClassifier and loaded.hparams.model_kwargs == SMALL
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_files_that_are_not_task_checkpoints(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.ckpt")
    with pytest.raises(ValueError, match=r"tensor\.ckpt.*not a checkpoint of an inrnet task"):
        load_task(tmp_path / "tensor.ckpt")
    torch.save({"inrnet": {"task": "NeRF"}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match=r"other\.ckpt.*not a checkpoint of an inrnet task.*INRClassifier"):
        load_task(tmp_path / "other.ckpt")
