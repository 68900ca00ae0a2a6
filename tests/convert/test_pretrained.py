"""Pretrained weights: local checkpoints load, and without a network loading fails fast and says so.

No test reaches the network: the hubs' caches point at empty temporary directories and
the connectivity probe is either disabled (``HF_HUB_OFFLINE=1``) or replaced.
"""

import socket
import time
from urllib.error import URLError

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from inrnet.convert import pretrained
from inrnet.convert.pretrained import from_pretrained, load_timm, load_torchvision, network_available


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Empty Hugging Face and torch hub caches."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    return tmp_path


def _fails_fast(fn, *args):
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="no network connection") as info:
        fn(*args)
    assert time.monotonic() - start < 5.0
    assert "checkpoint=" in str(info.value)


def test_offline_flag_skips_the_probe(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def connect(*args, **kwargs):
        raise AssertionError("no connection may be attempted when HF_HUB_OFFLINE=1")
    monkeypatch.setattr(socket, "create_connection", connect)
    assert not network_available("huggingface.co")


def test_probe_of_a_closed_port_is_quick(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()  # nothing listens there now
    start = time.monotonic()
    assert not network_available("127.0.0.1", port, timeout=1.0)
    assert time.monotonic() - start < 2.0


def test_timm_offline_fails_fast(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fails_fast(load_timm, "resnet18")


def test_timm_without_network_fails_fast_even_without_the_flag(empty_caches, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(pretrained, "network_available", lambda host, *a, **k: False)
    from huggingface_hub import constants
    before = constants.HF_HUB_OFFLINE
    _fails_fast(load_timm, "resnet18")
    assert constants.HF_HUB_OFFLINE == before, "the Hub's offline switch is restored"


def test_torchvision_offline_fails_fast(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fails_fast(load_torchvision, "resnet18")


def test_torchvision_download_failure_is_reported(empty_caches, monkeypatch):
    monkeypatch.setattr(pretrained, "network_available", lambda host, *a, **k: True)

    def download(*args, **kwargs):
        raise URLError("connection refused")
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", download)
    _fails_fast(load_torchvision, "resnet18")


def test_local_checkpoints_load_without_network(tmp_path, empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = timm.create_model("resnet18", pretrained=False)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    loaded = load_timm("resnet18", checkpoint=tmp_path / "r18.pth")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))
    tv = torchvision.models.mobilenet_v3_small()
    save_file(tv.state_dict(), str(tmp_path / "mnv3.safetensors"))
    loaded = load_torchvision("mobilenet_v3_small", checkpoint=tmp_path / "mnv3.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(tv.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(FileNotFoundError):
        load_torchvision("mobilenet_v3_small", checkpoint=tmp_path / "missing.pth")


def test_from_pretrained_converts_a_checkpoint(tmp_path, empty_caches):
    tv = torchvision.models.mobilenet_v3_small().eval()
    torch.save({"state_dict": tv.state_dict()}, tmp_path / "mnv3.pth")
    inet = from_pretrained("mobilenet_v3_small", (32, 32), source="torchvision", checkpoint=tmp_path / "mnv3.pth")
    assert not inet.training and inet.input_shape == (32, 32)
    assert torch.equal(inet.state_dict()["classifier.3.weight"], tv.state_dict()["classifier.3.weight"])
    with pytest.raises(ValueError, match="source"):
        from_pretrained("resnet18", (32, 32), source="hub")
