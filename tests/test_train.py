"""squeezeae train / reconstruct through the CLI entry point: outputs, exact resumption, user errors."""
import json
import os

import numpy as np
import pytest
import torch

from squeezeae_ext.cli import CommandError, main
from squeezeae_ext.data import load_images

TINY = ["--limit", "48", "--widths", "4,8", "--latent-channels", "4", "--batch-size", "16", "--quiet"]


def train(out, *extra):
    return main(["train", *TINY, "--out", str(out), *extra])


def snapshot(folder):
    """{relative path: bytes} of everything under folder: proves that a failed command wrote nothing."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def write_pngs(folder, sizes, mode="L"):
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        shape = (h, w) if mode == "L" else (h, w, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(os.path.join(folder, f"img{i}.png"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert train(out, "--epochs", "1") == 0
    return out


def test_train_writes_checkpoint_png_metrics(trained, capsys):
    assert sorted(os.listdir(trained)) == ["checkpoint.pt", "metrics.json", "reconstruction.png"]
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["model"] == "SqueezeAutoencoder" and metrics["fused_kernels"] is True
    assert metrics["data"]["train_images"] + metrics["data"]["heldout_images"] == 48
    assert metrics["parameters"] > 0 and np.isfinite(metrics["heldout_psnr_db"])
    assert len(metrics["history"]) == 1
    checkpoint = torch.load(trained / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["config"]["widths"] == [4, 8]
    json.dumps(checkpoint["config"])  # JSON-able
    from PIL import Image

    with Image.open(trained / "reconstruction.png") as image:
        assert image.mode == "L" and image.size[0] > image.size[1] > 0


def test_resume_matches_uninterrupted_run(tmp_path):
    straight, split_run = tmp_path / "straight", tmp_path / "split"
    assert train(straight, "--epochs", "2") == 0
    assert train(split_run, "--epochs", "1") == 0
    assert main(["train", "--resume", str(split_run / "checkpoint.pt"), "--epochs", "2", "--quiet"]) == 0
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(split_run / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for key, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][key][name]), (key, name)
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


def test_conv_model_and_reference(tmp_path):
    assert train(tmp_path / "conv", "--epochs", "1", "--model", "conv") == 0
    assert json.loads((tmp_path / "conv" / "metrics.json").read_text())["model"] == "ConvAutoencoder"
    assert train(tmp_path / "ref", "--epochs", "1", "--reference") == 0
    fused = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    assert fused["model_config"]["model"] == "squeeze"


def expect_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("squeezeae "), err
    assert match in err, err
    return err


def test_bad_data(tmp_path, capsys):
    expect_error(capsys, ["train", *TINY, "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                 "does not exist")
    (tmp_path / "empty").mkdir()
    expect_error(capsys, ["train", *TINY, "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
                 "no PNG/JPEG images")
    write_pngs(tmp_path / "mixed", [(16, 16), (16, 16), (20, 16)])
    err = expect_error(capsys, ["train", *TINY, "--data", str(tmp_path / "mixed"), "--out", str(tmp_path / "o")],
                       "img2.png is 20x16")
    assert "img0.png is 16x16" in err and "--resize" in err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    expect_error(capsys, ["train", *TINY, "--data", str(tmp_path / "broken"), "--out", str(tmp_path / "o")],
                 "cannot read image")
    np.save(tmp_path / "flat.npy", np.zeros((4, 16), np.float32))
    expect_error(capsys, ["train", *TINY, "--data", str(tmp_path / "flat.npy"), "--out", str(tmp_path / "o")],
                 "expected an array [N, H, W] or [N, C, H, W], got shape (4, 16)")
    assert not (tmp_path / "o").exists()


def test_mixed_sizes_with_resize_and_rgb(tmp_path):
    write_pngs(tmp_path / "mixed", [(16, 16), (20, 12), (16, 18)], mode="RGB")
    images = load_images(str(tmp_path / "mixed"), resize=(16, 16))
    assert images.shape == (3, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    np.save(tmp_path / "a.npy", np.random.default_rng(0).integers(0, 256, (5, 2, 9, 9), dtype=np.uint8))
    assert load_images(str(tmp_path / "a.npy")).shape == (5, 2, 9, 9)


def test_missing_scikit_learn(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(CommandError, match="pip install scikit-learn"):
        load_images(None)


def test_checkpoint_of_another_config_and_foreign_out(trained, tmp_path, capsys):
    before = snapshot(trained)
    checkpoint = str(trained / "checkpoint.pt")
    expect_error(capsys, ["train", "--resume", checkpoint, "--epochs", "2", "--model", "conv", "--quiet"],
                 "was trained with --model squeeze, this run asks for --model conv")
    expect_error(capsys, ["train", "--resume", checkpoint, "--epochs", "2", "--widths", "8,16", "--quiet"],
                 "--widths 4,8")
    expect_error(capsys, ["train", *TINY, "--epochs", "1", "--out", str(trained)], "already holds checkpoint.pt")
    expect_error(capsys, ["train", "--resume", checkpoint, "--quiet"], "already trained 1 epochs")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    expect_error(capsys, ["train", "--resume", str(tmp_path / "junk.pt"), "--quiet"], "cannot read checkpoint")
    assert snapshot(trained) == before


def test_reconstruct_folder_of_pngs(tmp_path, capsys):
    write_pngs(tmp_path / "pngs", [(16, 16)] * 6)
    assert main(["train", "--data", str(tmp_path / "pngs"), "--widths", "4,8", "--latent-channels", "4",
                 "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "rec"
    assert main(["reconstruct", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--data",
                 str(tmp_path / "pngs"), "--out", str(out), "--per-image"]) == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "6 images" in printed
    assert sorted(os.listdir(out / "images")) == [f"{i:05d}.png" for i in range(6)]
    assert (out / "reconstruction.png").exists()
    metrics = json.loads((out / "reconstruct_metrics.json").read_text())
    assert metrics["images"] == 6 and np.isfinite(metrics["psnr_db"])
    before = snapshot(out)
    expect_error(capsys, ["reconstruct", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--data",
                          str(tmp_path / "pngs"), "--out", str(out)], "already holds")
    assert snapshot(out) == before


def test_reconstruct_default_heldout(trained, tmp_path, capsys):
    assert main(["reconstruct", "--checkpoint", str(trained / "checkpoint.pt"), "--out", str(tmp_path / "r")]) == 0
    assert "held-out images" in capsys.readouterr().out
