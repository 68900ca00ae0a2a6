"""The ``inrnet`` command: fit / test with YAML configs, CSV logs, clear errors, the demo's flags."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from inrnet.cli import build, main
from inrnet.inr import PixelINR, save_inrs
from inrnet.models import pretrained as pt
from inrnet.models import create_model

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
TINY = ["--trainer.max_steps", "2", "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--data.batch_size", "8", "--data.eval_batch_size", "8"]


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """LightningCLI saves the resolved config.yaml into the working directory when no
    logger directory applies: keep it out of the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def data_dir(tmp_path):
    """train/ (16), test/ and test_fourier/ (8 each): 1-channel 28x28 linear PixelINRs, 10 classes."""
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 16), ("test", 8), ("test_fourier", 8)):
        save_inrs(tmp_path / "data" / split, PixelINR(torch.rand(n, 1, 28, 28, generator=g), "linear"),
                  torch.arange(n) % 10)
    return tmp_path / "data"


def _run(args, tmp_path):
    main([*args, "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])


def test_fit_then_test_from_a_config_writes_csv_logs_and_checkpoint(data_dir, tmp_path):
    config = CONFIGS / "fashion_mnist" / "inrnet2.yaml"
    small = ["--data.dataset", str(data_dir), "--data.val_size", "4", "--model.init_args.model_kwargs.widths",
             "[4, 8]", "--data.test_samplers", "[grid:28x28, sobol:784]", *TINY]
    _run(["fit", "--config", str(config), *small], tmp_path)
    run = tmp_path / "runs" / "fashion_mnist_inrnet2" / "version_0"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert any(r.get("train/loss") for r in rows) and any(r.get("val/top1/sobol_784") for r in rows)
    saved = yaml.safe_load(open(run / "config.yaml"))
    assert saved["model"]["init_args"]["model"] == "inrnet2"
    ckpt = run / "checkpoints" / "last.ckpt"  # ModelCheckpoint(save_last=True), as the guide says
    _run(["test", "--config", str(config), *small, "--ckpt_path", str(ckpt)], tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "runs" / "fashion_mnist_inrnet2" / "version_1" / "metrics.csv")))
    assert {"test/top1/grid_28x28", "test/top3/sobol_784"} <= set(rows[0])
    with pytest.raises(ValueError, match="holds .*'inrnet2'.*asks for .*'inrnet4'"):
        _run(["fit", "--config", str(CONFIGS / "fashion_mnist" / "inrnet4.yaml"), *small, "--ckpt_path", str(ckpt)],
             tmp_path)


def test_bad_configs_stop_before_training(data_dir, tmp_path):
    config = str(CONFIGS / "fashion_mnist" / "inrnet2.yaml")
    with pytest.raises(ValueError, match="unknown model 'resnet9'"):
        build(["--config", config, "--model.init_args.model", "resnet9", "--data.dataset", str(data_dir)])
    trainer, model, dm = build(["--config", config, "--data.dataset", "no_such_dataset", *TINY])
    with pytest.raises(ValueError, match="no_such_dataset"):
        trainer.fit(model, dm)
    trainer, model, dm = build(["--config", config, "--data.dataset", str(data_dir),
                                "--data.val_size", "0", "--model.init_args.model_kwargs.in_channels", "3", *TINY])
    with pytest.raises(ValueError, match=r"3 input channel\(s\) but the dataset's INRs output 1"):
        trainer.fit(model, dm)
    assert trainer.global_step == 0


@pytest.mark.parametrize("config", sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")))
def test_every_experiment_config_parses(config):
    trainer, model, dm = build(["--config", str(CONFIGS / config), "--trainer.logger", "false"])
    spec = yaml.safe_load(open(CONFIGS / config))
    assert model.hparams.model == spec["model"]["init_args"]["model"]
    assert type(dm).__name__ == spec["data"]["class_path"].rsplit(".", 1)[-1]


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_ckpt_path_is_read_with_weights_only(subcommand, capsys):
    with pytest.raises(SystemExit):
        main([subcommand, "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["weights_only"] is True


def test_demo_flags_are_checked():
    with pytest.raises(SystemExit):
        main(["demo", "--max-minutes", "0"])


def _tiny_tree(root: Path, splits: dict[str, int], classes: int, label_shape: tuple[int, int] | None) -> Path:
    """Stand-ins for a named dataset's splits: 3-channel 16x16 PixelINRs, class labels or label maps."""
    g = torch.Generator().manual_seed(0)
    for split, n in splits.items():
        if label_shape is None:
            labels = torch.arange(n) % classes
        else:
            labels = torch.randint(0, classes, (n, *label_shape), generator=g)
            labels[:, :1] = 255  # void
        save_inrs(root / split, PixelINR(torch.rand(n, 3, 16, 16, generator=g), "linear"), labels)
    return root


@pytest.mark.parametrize("config", ["imagenet_big12/inrnet4.yaml", "imagenet_big12/cnn2.yaml",
                                    "cityscapes/inrnet5.yaml", "cityscapes/fcn3.yaml"])
def test_paper_configs_run_end_to_end_on_tiny_trees(config, tmp_path):
    seg = config.startswith("cityscapes")
    splits = {"train": 4, "test": 4} if seg else {"train": 4, "test_fourier": 4}
    data = _tiny_tree(tmp_path / "data", splits, 7 if seg else 12, (24, 48) if seg else None)
    small = ["--data.dataset", str(data), "--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false",
             "--trainer.enable_model_summary", "false", "--trainer.logger", "false",
             "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]", "--trainer.devices", "1"]
    pixel = "cnn" in config or "fcn" in config
    if not pixel:
        small += ["--data.train_sampler", "sobol:128", "--data.test_samplers", "[sobol:128, grid:12x24]" if seg
                  else "[sobol:128, grid:8x8]", "--model.init_args.model_kwargs.n_bins", "16"]
    elif seg:
        small += ["--data.train_sampler", "grid:12x24", "--data.test_samplers", "[grid:12x24]"]
    if seg:
        small += ["--model.init_args.model_kwargs.width", "4", "--data.train_label_points", "64"]
    trainer, model, dm = build(["--config", str(CONFIGS / config), *small])
    trainer.fit(model, dm)
    metrics = {k: v for r in trainer.test(model, dm, verbose=False) for k, v in r.items()}
    wanted = ("test/miou/", "test/pixacc/") if seg else ("test/top1/", "test/top3/")
    assert all(any(k.startswith(w) for k in metrics) for w in wanted), metrics


def test_predict_writes_predictions(data_dir, tmp_path):
    config = CONFIGS / "fashion_mnist" / "inrnet2.yaml"
    small = ["--data.dataset", str(data_dir), "--data.val_size", "0", "--model.init_args.model_kwargs.widths",
             "[4, 8]", "--data.test_samplers", "[grid:28x28]", *TINY]
    _run(["fit", "--config", str(config), *small], tmp_path)
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    out = tmp_path / "pred.pt"
    _run(["predict", "--config", str(config), *small, "--ckpt_path", str(ckpt),
          "--trainer.callbacks+=inrnet.lightning.SavePredictions", f"--trainer.callbacks.path={out}"], tmp_path)
    saved = torch.load(out)
    assert saved["logits"].shape == (8, 10) and torch.equal(saved["pred"], saved["logits"].argmax(1))
    assert torch.equal(saved["target"], torch.arange(8) % 10)  # the test_fourier split, in order


def test_test_with_batch_norm_recalibration_from_the_command_line(data_dir, tmp_path, monkeypatch):
    import inrnet.lightning.callbacks as callbacks

    calls = []
    original = callbacks.recalibrate_norms
    monkeypatch.setattr(callbacks, "recalibrate_norms", lambda *a, **k: calls.append(original(*a, **k)))
    config = CONFIGS / "fashion_mnist" / "inrnet2.yaml"
    small = ["--data.dataset", str(data_dir), "--data.val_size", "0", "--model.init_args.model_kwargs.widths",
             "[4, 8]", "--data.test_samplers", "[sobol:196, sobol:784]", *TINY]
    _run(["fit", "--config", str(config), *small], tmp_path)
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    _run(["test", "--config", str(config), *small, "--ckpt_path", str(ckpt),
          "--trainer.callbacks+=inrnet.lightning.RecalibrateNorms", "--trainer.callbacks.num_batches=2"], tmp_path)
    (log,) = [p for p in (tmp_path / "runs").rglob("metrics.csv") if p.parent.name == "version_1"]
    header = log.read_text().splitlines()[0]
    assert "test/top1/sobol_196" in header and "test/top1/sobol_784" in header
    assert calls == [2, 2]  # two training batches for each of the two settings


def test_test_evaluates_shipped_weights_without_a_training_run(data_dir, tmp_path, monkeypatch):
    """``inrnet test`` of ``model_kwargs: {pretrained: TAG}`` scores the shipped weights as they are;
    experiments/ship_pretrained.py turns a fit + test into such weights with their scores."""
    monkeypatch.setattr(pt, "WEIGHTS_DIR", tmp_path / "weights")
    config = CONFIGS / "fashion_mnist" / "inrnet2.yaml"
    small = ["--data.dataset", str(data_dir), "--data.val_size", "0", "--model.init_args.model_kwargs.widths",
             "[4, 8]", "--data.test_samplers", "[grid:28x28]", *TINY]
    _run(["fit", "--config", str(config), *small], tmp_path)
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    _run(["test", "--config", str(config), *small, "--ckpt_path", str(ckpt)], tmp_path)
    (metrics,) = (tmp_path / "runs").rglob("version_1/metrics.csv")
    ship = _load_script("ship_pretrained")
    assert ship.main([str(ckpt), "--tag", "toy", "--test-metrics", str(metrics), "--config", str(config),
                      "--command", "inrnet fit ...", "--data", "16 pixel INRs", "--commit", "abc"]) == 0
    info = pt.pretrained_info("inrnet2", "toy")
    fitted = dict(next(csv.DictReader(open(metrics))))
    assert info["scores"]["top1/grid_28x28"] == pytest.approx(float(fitted["test/top1/grid_28x28"]))
    assert info["provenance"]["commit"] == "abc" and info["recipe"]["global_step"] == 2
    _run(["test", "--config", str(config), *small, "--model.init_args.model_kwargs.pretrained", "toy"], tmp_path)
    (again,) = (tmp_path / "runs").rglob("version_2/metrics.csv")
    rows = dict(next(csv.DictReader(open(again))))
    assert float(rows["test/top1/grid_28x28"]) == pytest.approx(float(fitted["test/top1/grid_28x28"]))
    # the same weights shipped under another quadrature, with the scores of retest.py's output
    out = tmp_path / "retest.log"
    out.write_text('noise\n{"metrics": {"test/top1/grid_28x28": 0.5, "test/loss/grid_28x28": 1.0}}\n')
    assert ship.main([str(ckpt), "--tag", "toy2", "--test-metrics", str(out), "--config", str(config),
                      "--command", "retest.py ...", "--data", "16 pixel INRs", "--model-kwargs",
                      '{"estimator": "tap_mean"}']) == 0
    info = pt.pretrained_info("inrnet2", "toy2")
    assert info["config"]["estimator"] == "tap_mean" and info["scores"]["top1/grid_28x28"] == 0.5
    assert info["recipe"]["evaluated_with"] == {"estimator": "tap_mean"}
    shipped = create_model("inrnet2", pretrained="toy2")
    assert all(c.estimator == "tap_mean" for c in shipped.modules() if hasattr(c, "estimator"))
    with pytest.raises(RuntimeError, match="size mismatch"):
        ship.main([str(ckpt), "--tag", "toy3", "--test-metrics", str(out), "--config", str(config),
                   "--command", "x", "--data", "x", "--model-kwargs", '{"widths": [4, 4]}'])
    # shipped weights re-shipped under another quadrature: same tensors, recipe kept, scores replaced
    out.write_text('{"metrics": {"test/top1/grid_28x28": 0.25}}\n')
    assert ship.main(["--from-pretrained", "inrnet2:toy2", "--model-kwargs", '{"estimator": "tap_quadratic"}',
                      "--test-metrics", str(out), "--commit", "def"]) == 0
    again = pt.pretrained_info("inrnet2", "toy2")
    assert again["config"]["estimator"] == "tap_quadratic" and again["scores"] == {"top1/grid_28x28": 0.25}
    assert again["recipe"]["command"] == "retest.py ..."
    assert again["recipe"]["evaluated_with"] == {"estimator": "tap_quadratic"}
    assert again["provenance"]["reshipped"]["commit"] == "def"
    assert again["provenance"]["commit"] == info["provenance"]["commit"]
    reshipped = create_model("inrnet2", pretrained="toy2")
    for (k, v), (k2, v2) in zip(shipped.state_dict().items(), reshipped.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    with pytest.raises(SystemExit):  # a checkpoint and --from-pretrained at once
        ship.main([str(ckpt), "--from-pretrained", "inrnet2:toy2", "--test-metrics", str(out)])
    with pytest.raises(ValueError, match="widths"):  # only evaluation kwargs may change
        ship.main(["--from-pretrained", "inrnet2:toy2", "--model-kwargs", '{"widths": [4, 4]}',
                   "--test-metrics", str(out)])


def _load_script(name: str):
    """A module of experiments/ by file name (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, CONFIGS.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table2_script_trains_scores_and_skips_a_finished_pair(tmp_path, capsys, monkeypatch):
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 4), ("test", 2)):
        labels = torch.randint(0, 11, (n, 64, 64), generator=g)
        labels[:, :2] = 255  # void
        save_inrs(tmp_path / "scenes" / split, PixelINR(torch.rand(n, 1, 16, 16, generator=g), "linear"), labels)
    table2 = _load_script("table2")
    args = ["--root", str(tmp_path / "scenes"), "--out", str(tmp_path / "out"), "--models", "inrnet_unet", "unet",
            "--max-steps", "1"]
    table2.main(args)
    inr = json.loads((tmp_path / "out" / "inrnet_unet.json").read_text())
    pix = json.loads((tmp_path / "out" / "unet.json").read_text())
    assert inr["steps"] == pix["steps"] == 1
    for key in ("grid_64x64", "sobol_4096", "grid_128x128", "sobol_16384"):
        assert 0 <= inr["metrics"][f"test/miou/{key}"] <= 1
    assert set(k.rsplit("/", 1)[1] for k in pix["metrics"]) == {"grid_64x64", "grid_128x128"}
    table = (tmp_path / "out" / "table2.md").read_text()
    assert "`inrnet_unet`" in table and "`unet`" in table and "`fcn3`" not in table
    capsys.readouterr()
    table2.main(args)  # a finished model is skipped, not retrained
    assert capsys.readouterr().out.count("done, skipped") == 2
    # retest.py: the same weights under another quadrature; on the grid "tap_mean" is "sum"
    retest = _load_script("retest")
    base = [str(tmp_path / "out" / "inrnet_unet.ckpt"), "--config",
            str(CONFIGS / "fashion_mnist_scenes" / "inrnet_unet.yaml"), "--root", str(tmp_path / "scenes"), "--",
            "--data.test_samplers=[grid:64x64]", "--trainer.callbacks=[]"]
    scores = {}
    for est in ("sum", "tap_mean"):
        capsys.readouterr()
        retest.main(base + [f"--model.init_args.model_kwargs.estimator={est}"])
        scores[est] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["metrics"]
    assert 0 <= scores["sum"]["test/miou/grid_64x64"] <= 1
    assert scores["tap_mean"] == pytest.approx(scores["sum"], abs=1e-6)
    with pytest.raises(RuntimeError, match="size mismatch"):  # another architecture is refused, not part-loaded
        retest.main(base + ["--model.init_args.model_kwargs.widths=[8, 8]"])
    # retest.py --pretrained: shipped weights of the config's model instead of a checkpoint
    from inrnet.lightning import load_task
    monkeypatch.setattr(pt, "WEIGHTS_DIR", tmp_path / "weights")
    pt.save_pretrained(load_task(tmp_path / "out" / "inrnet_unet.ckpt").model, "toy", recipe={}, scores={},
                       provenance={})
    capsys.readouterr()
    retest.main(["--pretrained", "toy"] + base[1:] + ["--model.init_args.model_kwargs.estimator=tap_mean"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["checkpoint"] == "pretrained=toy" and line["metrics"] == pytest.approx(scores["tap_mean"], abs=1e-6)
    with pytest.raises(SystemExit):
        retest.main(base[1:])  # neither a checkpoint nor --pretrained
