"""Pretrained weights: local checkpoints load, and without a network loading fails fast and says so;
the registered model ``convert`` builds a pretrained CNN, truncated, with a new head and the
input normalisation its weights expect.

No test reaches the network: the hubs' caches point at empty temporary directories and
the connectivity probe is either disabled (``HF_HUB_OFFLINE=1``) or replaced. Weights are
random, saved by the tests to local files.
"""

import socket
import time
from urllib.error import URLError

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

from inrnet.convert import pretrained
from inrnet.convert.pretrained import (NoNetworkError, WeightsFileNotFoundError, WeightsUnavailableError,
                                       from_pretrained, input_normalization, load_cnn, load_timm, load_torchvision,
                                       network_available)
from inrnet.field import Field
from inrnet.lightning import num_outputs
from inrnet.models import create_model
from inrnet.testing import grid_field

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


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


# --- load_cnn and input_normalization: CNNs named as configs name them --------------------------


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_cnn_reads_a_file_or_nothing_and_says_what_it_cannot_have(tmp_path, empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r18 = timm.create_model("resnet18")
    save_file(r18.state_dict(), str(tmp_path / "r18.safetensors"))
    assert _same_state(load_cnn("timm/resnet18", tmp_path / "r18.safetensors"), r18)
    b0 = torchvision.models.efficientnet_b0()
    torch.save(b0.state_dict(), tmp_path / "b0.pth")
    assert _same_state(load_cnn("torchvision/efficientnet_b0", str(tmp_path / "b0.pth")), b0)

    def no_reading(*args, **kwargs):
        raise AssertionError("random initialisation reads no weights")
    for name in ("_read_state_dict", "load_timm", "load_torchvision"):
        with monkeypatch.context() as m:
            m.setattr(pretrained, name, no_reading)
            assert isinstance(load_cnn("timm/resnet18", None, num_classes=3), timm.models.ResNet)
            assert load_cnn("torchvision/efficientnet_b0", "none", num_classes=3).classifier[1].out_features == 3

    for source in ("timm/resnet18", "torchvision/efficientnet_b0"):
        with pytest.raises(WeightsFileNotFoundError, match="missing.pth does not exist") as info:
            load_cnn(source, tmp_path / "missing.pth")
        assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, WeightsUnavailableError)
        start = time.monotonic()
        with pytest.raises(NoNetworkError, match="no network connection") as info:
            load_cnn(source, "pretrained")
        assert time.monotonic() - start < 5.0
        assert isinstance(info.value, RuntimeError) and isinstance(info.value, WeightsUnavailableError)
    with pytest.raises(NoNetworkError):
        load_cnn("torchvision/efficientnet_b0", "IMAGENET1K_V1")
    with pytest.raises(ValueError, match=r"weights must be None.*IMAGENET1K_V1, DEFAULT.*\.safetensors"):
        load_cnn("torchvision/efficientnet_b0", "IMAGENET1K_V9")
    with pytest.raises(ValueError, match="source must be 'timm/<model name>'"):
        load_cnn("resnet18", None)


def test_input_normalization_is_read_off_the_libraries_metadata(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def download(*args, **kwargs):
        raise AssertionError("reading the statistics downloads nothing")
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", download)
    assert input_normalization("timm/resnet18") == IMAGENET
    assert input_normalization("torchvision/efficientnet_b0") == IMAGENET
    assert input_normalization("torchvision/efficientnet_b0", "IMAGENET1K_V1") == IMAGENET
    assert input_normalization("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k") == ((0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="weights must be"):
        input_normalization("torchvision/efficientnet_b0", "IMAGENET1K_V9")


# --- the registered model "convert" ------------------------------------------------------------


def _gray_mean_std():
    return sum(IMAGENET[0]) / 3, sum(IMAGENET[1]) / 3


def test_convert_equals_the_cnn_on_the_normalised_images_on_the_grid(tmp_path, empty_caches, monkeypatch, h):
    """On grid samples of images in [0, 1] the converted model is the CNN (with the weights of the
    file) on the images normalised as its weights expect; a gray input normalised with the
    averaged statistics is the RGB CNN on that input repeated in every channel."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    g = torch.Generator().manual_seed(0)
    r18 = h.randomize_norms(timm.create_model("resnet18")).eval()
    save_file(r18.state_dict(), str(tmp_path / "r18.safetensors"))
    rgb = torch.rand(2, 3, 32, 32, generator=g)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in IMAGENET)
    inet = create_model("convert", source="timm/resnet18", input_shape=[32, 32],
                        weights=str(tmp_path / "r18.safetensors")).eval()
    raw = create_model("convert", source="timm/resnet18", input_shape=[32, 32], weights=tmp_path / "r18.safetensors",
                       normalize=False).eval()
    with torch.no_grad():
        assert h.relative_error(inet(grid_field(rgb)), r18((rgb - mean) / std)) < 1e-4
        assert h.relative_error(raw(grid_field(rgb)), r18(rgb)) < 1e-4
        assert not hasattr(raw, "normalize")

    b0 = h.randomize_norms(torchvision.models.efficientnet_b0()).eval()
    torch.save(b0.state_dict(), tmp_path / "b0.pth")
    gray = torch.rand(2, 1, 28, 28, generator=g)
    inet = create_model("convert", source="torchvision/efficientnet_b0", input_shape=[28, 28],
                        weights=str(tmp_path / "b0.pth"), in_channels=1, truncate="features[:3]", head="linear",
                        num_classes=10).eval()
    m, s = _gray_mean_std()
    torch.testing.assert_close(inet.normalize.mean.flatten(), torch.tensor([m]))
    torch.testing.assert_close(inet.normalize.std.flatten(), torch.tensor([s]))
    with torch.no_grad():
        features = b0.features[:3](((gray - m) / s).expand(-1, 3, -1, -1))  # (B, 24, 7, 7)
        ref = F.linear(features.mean((2, 3)), inet.get_parameter("head.fc.weight"), inet.get_parameter("head.fc.bias"))
        assert h.relative_error(inet(grid_field(gray)), ref) < 1e-4

    explicit = create_model("convert", source="timm/resnet18", input_shape=[32, 32], weights=tmp_path / "r18.safetensors",
                            in_channels=1, normalize={"mean": 0.5, "std": [0.25]}).eval()
    gray = rgb[:, :1]
    with torch.no_grad():
        ref = r18(((gray - 0.5) / 0.25).expand(-1, 3, -1, -1))
        assert h.relative_error(explicit(grid_field(gray)), ref) < 1e-4


def test_truncate_and_head_keep_the_cnns_names_and_num_outputs_counts_the_classes(tmp_path):
    b0 = torchvision.models.efficientnet_b0()
    inet = create_model("convert", source="torchvision/efficientnet_b0", input_shape=[28, 28], weights=None,
                        in_channels=1, truncate="features[:3]", head="linear", num_classes=10)
    assert inet.training and inet.in_channels == 1 and inet.input_shape == (28, 28)
    assert set(inet.state_dict()) == ({"normalize.mean", "normalize.std", "head.fc.weight", "head.fc.bias"}
                                      | {f"cnn.features.{k}" for k in b0.features[:3].state_dict()})
    assert num_outputs(inet) == 10
    features = create_model("convert", source="torchvision/efficientnet_b0", input_shape=[28, 28], weights=None,
                            truncate="features[:3]")
    assert num_outputs(features) == 24  # a feature map: 24 channels at stride 4
    with torch.no_grad():
        out = features.eval()(grid_field(torch.rand(1, 3, 28, 28)))
    assert isinstance(out, Field) and out.values.shape == (1, 49, 24)

    r18 = timm.create_model("resnet18")
    torch.save(r18.state_dict(), tmp_path / "r18.pth")  # 1000 classes
    inet = create_model("convert", source="timm/resnet18", input_shape=[28, 28], weights=tmp_path / "r18.pth",
                        in_channels=1, num_classes=10)
    assert num_outputs(inet) == 10  # a new classifier (timm's reset_classifier)
    torch.testing.assert_close(inet.get_parameter("cnn.conv1.weight").reshape(64, 1, 7, 7),
                               r18.conv1.weight.sum(1, keepdim=True))  # the stem summed over RGB
    torch.testing.assert_close(inet.get_parameter("cnn.layer1.0.conv1.weight").reshape(64, 64, 3, 3),
                               r18.layer1[0].conv1.weight)
    stem = create_model("convert", source="timm/resnet18", input_shape=[28, 28], weights=None,
                        truncate=["conv1", "bn1", "act1", "maxpool", "layer1"])
    assert num_outputs(stem) == 64


@pytest.mark.parametrize("kwargs,match", [
    ({"head": "linear", "num_classes": 10}, "head='linear' goes on the feature map of a truncated CNN"),
    ({"truncate": "features[:3]", "head": "linear"}, "head='linear' needs num_classes"),
    ({"truncate": "features[:3]", "num_classes": 10}, "returns its feature map, not 10 classes"),
    ({"head": "mlp"}, "head must be None"),
    ({"truncate": "blocks[:2]"}, "has no submodule 'blocks'; its top-level submodules are features, avgpool, "
                                 "classifier"),
    ({"truncate": "avgpool[:1]"}, "avgpool is a AdaptiveAvgPool2d, not a nn.Sequential"),
    ({"truncate": "features[5:5]"}, "keeps nothing"),
    ({"truncate": "features[:3"}, "is not '<name>' or '<name>\\[i:j\\]'"),
    ({"truncate": ["features[:2]", "features[2:3]"]}, "names 'features' twice"),
    ({"in_channels": 2}, "expect 3-channel inputs .* the model takes 2"),
    ({"normalize": {"mean": [0.5, 0.5]}}, "normalize must be True"),
    ({"normalize": {"mean": [0.5, 0.5], "std": [1, 1]}}, "normalize.mean needs 1 or 3 values"),
    ({"normalize": {"mean": 0.5, "std": 0.0}}, "std must be positive"),
])
def test_convert_refuses_what_it_cannot_build(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("convert", source="torchvision/efficientnet_b0", input_shape=[28, 28], weights=None, **kwargs)


def test_convert_offline_without_a_file_fails_fast_and_names_the_config_key(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(NoNetworkError, match="no network connection") as info:
        create_model("convert", source="timm/resnet18", input_shape=[28, 28])  # weights="pretrained"
    assert time.monotonic() - start < 5.0
    assert any("model_kwargs.weights" in note for note in info.value.__notes__)
