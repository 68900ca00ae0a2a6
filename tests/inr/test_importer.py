"""Importing per-image SIREN state dicts: the reference layouts, checks, labels, order."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from inrnet.cli import main
from inrnet.inr import INRDataset, SirenFamily, import_inrs
from inrnet.inr.importer import IMPORT_RECORD, load_state_dict


class SineLayer(nn.Module):
    """The reference ``SineLayer`` (explore_siren notebook): ``sin(omega_0 * linear(x))``."""

    def __init__(self, fan_in, fan_out, is_first=False, omega_0=30.0):
        super().__init__()
        self.omega_0, self.linear = omega_0, nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            bound = 1 / fan_in if is_first else math.sqrt(6 / fan_in) / omega_0
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x):
        return torch.sin(self.omega_0 * self.linear(x))


class NotebookSiren(nn.Module):
    """The notebook's ``Siren`` with ``outermost_linear=True``: keys ``net.{i}.linear.*``, last ``net.{i}.*``."""

    def __init__(self, fan_in=2, width=8, hidden=2, fan_out=3, first_omega_0=30.0, hidden_omega_0=30.0):
        super().__init__()
        layers = [SineLayer(fan_in, width, True, first_omega_0)]
        layers += [SineLayer(width, width, False, hidden_omega_0) for _ in range(hidden)]
        layers.append(nn.Linear(width, fan_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Sine(nn.Module):
    def forward(self, x):
        return torch.sin(30 * x)  # modules.py's Sine: omega_0 = 30 fixed


class FCBlock(nn.Module):
    """modules.py's ``FCBlock`` (sine, outermost linear): each layer ``nn.Sequential(Linear, Sine)``."""

    def __init__(self, fan_in=2, width=8, hidden=1, fan_out=1):
        super().__init__()
        layers = [nn.Sequential(nn.Linear(fan_in, width), Sine())]
        layers += [nn.Sequential(nn.Linear(width, width), Sine()) for _ in range(hidden)]
        layers.append(nn.Sequential(nn.Linear(width, fan_out)))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class SingleBVPNet(nn.Module):
    """modules.py's ``SingleBVPNet`` (its ``net`` an ``FCBlock``): keys ``net.net.{i}.0.*``."""

    def __init__(self, **kwargs):
        super().__init__()
        self.net = FCBlock(**kwargs)

    def forward(self, x):
        return self.net(x)


def _assert_imported_equals(ds, modules, atol=1e-5):
    x = torch.rand(1, 50, ds.family.in_features) * 2 - 1  # (1, N, d)
    got = ds.batch(list(range(len(ds))))[0](x)  # (B, N, c)
    with torch.no_grad():
        want = torch.stack([m(x[0]) for m in modules])  # (B, N, c)
    torch.testing.assert_close(got, want, atol=atol, rtol=1e-4)


def test_notebook_layout_matches_the_reference_forward(tmp_path):
    mods = [NotebookSiren(first_omega_0=30.0, hidden_omega_0=20.0) for _ in range(3)]
    for i, m in enumerate(mods):
        _write(tmp_path / "src", f"{i}.pth", m.state_dict())
    ds = import_inrs(tmp_path / "src", tmp_path / "out", omega_0=20.0, first_omega_0=30.0)
    assert ds.family == SirenFamily(2, 3, width=8, depth=4, omega_0=20.0, first_omega_0=30.0)
    assert ds.labels.tolist() == [-1, -1, -1]
    _assert_imported_equals(ds, mods)
    record = json.loads((tmp_path / "out" / IMPORT_RECORD).read_text())
    assert record["layout"] == "siren-notebook" and record["files"] == ["0.pth", "1.pth", "2.pth"]


def test_modules_layout_both_prefixes_and_safetensors(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    a, b = SingleBVPNet(), SingleBVPNet()
    torch.save(a.state_dict(), src / "a.pt")  # net.net.{i}.0.*
    save_file(b.net.state_dict(), src / "b.safetensors")  # an FCBlock alone: net.{i}.0.*
    with pytest.raises(ValueError, match="outermost_linear=True"):  # the keys cannot tell a sine last layer
        import_inrs(src, tmp_path / "o0")
    ds = import_inrs(src, tmp_path / "out", outermost_linear=True)
    assert ds.family == SirenFamily(2, 1, width=8, depth=3, omega_0=30.0, first_omega_0=30.0)
    _assert_imported_equals(ds, [a, b])


def test_plain_sequential_needs_the_family(tmp_path):
    src = tmp_path / "src"
    src.mkdir()

    class SinSeq(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = nn.Sequential(nn.Linear(2, 4), nn.Identity(), nn.Linear(4, 4), nn.Identity(), nn.Linear(4, 1))

        def forward(self, x):
            h = torch.sin(10 * self.seq[0](x))
            h = torch.sin(10 * self.seq[2](h))
            return self.seq[4](h)

    m = SinSeq()
    torch.save(m.seq.state_dict(), src / "x.pth")  # 0.*, 2.*, 4.*
    with pytest.raises(ValueError, match=r"x\.pth.*family='siren'"):
        import_inrs(src, tmp_path / "o1")
    with pytest.raises(ValueError, match="outermost_linear"):
        import_inrs(src, tmp_path / "o1b", family="siren", omega_0=10.0)
    with pytest.raises(ValueError, match="sine layer"):
        import_inrs(src, tmp_path / "o1c", family="siren", omega_0=10.0, outermost_linear=False)
    ds = import_inrs(src, tmp_path / "o2", family="siren", omega_0=10.0, outermost_linear=True)
    _assert_imported_equals(ds, [m])
    with pytest.raises(ValueError, match="cannot import into INR family 'fourier'"):
        import_inrs(src, tmp_path / "o3", family="fourier")


def _write(src, name, state):
    path = src / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update({"net.0.scale": torch.ones(1)}), r"unexpected parameters \['net.0.scale'\]"),
    (lambda s: s.pop("net.1.linear.bias"), "layer 1 has 'net.1.linear.weight' but no bias"),
    (lambda s: s.update({"net.1.linear.bias": torch.ones(5)}), r"'net.1.linear.bias' must be \[8\]"),
    (lambda s: s.update({"net.1.linear.weight": torch.ones(8, 5)}), "'net.1.linear.weight' takes 5 inputs"),
    (lambda s: s.update({"net.3.weight": torch.ones(3, 8, 1)}), "'net.3.weight' must be a 2-d weight"),
    (lambda s: s.clear() or s.update({"w": torch.ones(2)}), "no key fits a known layout"),
])
def test_bad_state_dicts_name_the_file_and_parameter(tmp_path, edit, message):
    state = NotebookSiren(hidden=1).state_dict()  # net.0.linear, net.1.linear, net.2
    state["net.3.weight"], state["net.3.bias"] = state.pop("net.2.weight"), state.pop("net.2.bias")
    state = dict(state)
    edit(state)
    _write(tmp_path / "src", "bad.pth", state)
    with pytest.raises(ValueError, match="bad.pth") as e:
        import_inrs(tmp_path / "src", tmp_path / "out")
    assert e.match(message)


def test_unequal_hidden_widths_and_mixed_architectures(tmp_path):
    m = NotebookSiren(hidden=1)
    state = {"0.weight": torch.ones(6, 2), "0.bias": torch.ones(6), "1.weight": torch.ones(4, 6),
             "1.bias": torch.ones(4), "2.weight": torch.ones(1, 4), "2.bias": torch.ones(1)}
    _write(tmp_path / "a", "x.pth", state)
    with pytest.raises(ValueError, match="x.pth.*different widths"):
        import_inrs(tmp_path / "a", tmp_path / "o", family="siren")
    _write(tmp_path / "b", "1.pth", m.state_dict())
    _write(tmp_path / "b", "2.pth", NotebookSiren(width=4, hidden=1).state_dict())
    with pytest.raises(ValueError, match=r"2\.pth.*one architecture"):
        import_inrs(tmp_path / "b", tmp_path / "o")


def test_loading_runs_no_code_and_rejects_non_state_dicts(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"net.0.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="cannot read the state dict .*evil.pth"):
        load_state_dict(tmp_path / "evil.pth")
    torch.save({"model": {"net.0.weight": torch.ones(1)}}, tmp_path / "nested.pth")
    with pytest.raises(ValueError, match=r"nested.pth.*\['model'\] are not tensors"):
        load_state_dict(tmp_path / "nested.pth")
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth.*holds a list"):
        load_state_dict(tmp_path / "list.pth")


def test_labels_from_folders_in_sorted_path_order(tmp_path):
    src = tmp_path / "src"
    for name in ("dog/b.pth", "cat/z.pth", "dog/a.pth", "cat/sub/y.pth"):
        _write(src, name, NotebookSiren(hidden=1).state_dict())
    ds = import_inrs(src, tmp_path / "out", labels="folders")
    record = json.loads((tmp_path / "out" / IMPORT_RECORD).read_text())
    assert record["files"] == ["cat/sub/y.pth", "cat/z.pth", "dog/a.pth", "dog/b.pth"]
    assert record["classes"] == ["cat", "cat/sub", "dog"] and ds.labels.tolist() == [1, 0, 2, 2]
    _write(src, "top.pth", NotebookSiren(hidden=1).state_dict())
    with pytest.raises(ValueError, match="'top.pth' is not"):
        import_inrs(src, tmp_path / "out2", labels="folders")


def test_labels_from_a_csv(tmp_path):
    src = tmp_path / "src"
    for name in ("a.pth", "b.pth", "c.pth"):
        _write(src, name, NotebookSiren(hidden=1).state_dict())
    table = tmp_path / "labels.csv"
    table.write_text("file,label\nc.pth,7\na.pth,2\nb.pth,7\n")
    assert import_inrs(src, tmp_path / "o1", labels=table).labels.tolist() == [2, 7, 7]
    table.write_text("a.pth,zebra\nb.pth,ant\nc.pth,zebra\n")
    assert import_inrs(src, tmp_path / "o2", labels=table).labels.tolist() == [1, 0, 1]
    assert json.loads((tmp_path / "o2" / IMPORT_RECORD).read_text())["classes"] == ["ant", "zebra"]
    table.write_text("a.pth,1\nb.pth,1\nd.pth,1\n")
    with pytest.raises(ValueError, match=r"labels.csv.*no label for \['c.pth'\].*not there: \['d.pth'\]"):
        import_inrs(src, tmp_path / "o3", labels=table)
    table.write_text("a.pth,1\na.pth,2\n")
    with pytest.raises(ValueError, match="line 2: 'a.pth' is listed twice"):
        import_inrs(src, tmp_path / "o4", labels=table)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        import_inrs(src, tmp_path / "o5", labels=tmp_path / "nope.csv")


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder"):
        import_inrs(tmp_path / "none", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no"):
        import_inrs(tmp_path / "empty", tmp_path / "out")


def test_inrnet_import_command(tmp_path, capsys):
    src = tmp_path / "src"
    mods = [NotebookSiren(hidden=1, hidden_omega_0=15.0) for _ in range(2)]
    for name, m in zip(("one/a.pth", "two/b.pth"), mods):
        _write(src, name, m.state_dict())
    main(["import", str(src), "--out", str(tmp_path / "out"), "--labels", "folders", "--omega-0", "15",
          "--first-omega-0", "30"])
    assert "imported 2 INRs of SirenFamily(" in capsys.readouterr().out
    ds = INRDataset(tmp_path / "out")
    assert ds.labels.tolist() == [0, 1] and ds.family.omega_0 == 15.0 and ds.family.first_omega_0 == 30.0
    _assert_imported_equals(ds, mods)
    with pytest.raises(SystemExit):  # the dataset exists: a message, not a traceback
        main(["import", str(src), "--out", str(tmp_path / "out")])
    assert "already holds an INR dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["import", str(src), "--out", str(tmp_path / "o2"), "--family", "fourier"])


def test_a_notebook_siren_whose_last_layer_is_a_sine_layer_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    state = {"net.0.linear.weight": torch.randn(4, 2), "net.0.linear.bias": torch.randn(4),
             "net.1.linear.weight": torch.randn(1, 4), "net.1.linear.bias": torch.randn(1)}  # outermost_linear=False
    torch.save(state, src / "s.pth")
    with pytest.raises(ValueError, match=r"s\.pth.*'net\.1\.linear' is a sine layer"):
        import_inrs(src, tmp_path / "out")
