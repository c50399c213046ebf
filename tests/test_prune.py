"""`rtseg prune` and `rtseg train --init`: a trained UNet made narrower keeps its strongest
filters, loads, exports and fine-tunes like any checkpoint; bad requests get one line."""


import numpy as np
import pytest
import torch

from rtseg.models import load_checkpoint, read_checkpoint_metadata
from rtseg.models.flops import count_flops
from test_folder_data import cli as _cli
from test_folder_data import trained_three_class


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-class unet_resnet18 trained for one epoch on a tiny folder data set."""
    return trained_three_class(tmp_path_factory.mktemp("prune"))


def test_pruning_keeps_original_filters_and_cuts_the_flops(trained, tmp_path, capfd):
    source = trained / "run" / "best.safetensors"
    out = tmp_path / "slim.safetensors"
    code, said, err = _cli(["prune", "--checkpoint", source, "--out", out, "--ratio", 0.5],
                           capfd)
    assert code == 0, err
    assert "GFLOPs" in said and "rtseg train --init" in said

    full, meta = load_checkpoint(source)
    slim, slim_meta = load_checkpoint(out)
    assert slim_meta.extra["pruned"]["ratio"] == 0.5
    assert "val_miou" not in slim_meta.extra  # the unpruned network's score
    size = tuple(meta.input_size)
    assert count_flops(slim.net, size) < 0.4 * count_flops(full.net, size)
    first, first_slim = full.net.encoder.conv1.weight, slim.net.encoder.conv1.weight
    assert first_slim.shape[0] == first.shape[0] // 2
    # The kept filters are original ones, unchanged, in their order (chosen by the L1 norm of
    # all the layers pruned with them: ResNet's residual adds tie conv1 to layer1).
    kept = [int(torch.nonzero((first == f).flatten(1).all(1))[0]) for f in first_slim]
    assert kept == sorted(kept) and len(set(kept)) == len(kept)

    frames = torch.randint(0, 256, (2, *size, 3), dtype=torch.uint8)
    with torch.no_grad():
        labels = slim(frames)
    assert labels.shape == (2, *size) and int(labels.max()) < 3

    onnx = tmp_path / "slim.onnx"
    code, _, err = _cli(["export", "--checkpoint", out, "--out", onnx], capfd)
    assert code == 0, err
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    graph_labels = session.run(None, {"frames": frames.numpy()})[0]
    assert np.mean(graph_labels == labels.numpy()) > 0.99


def test_a_pruned_checkpoint_fine_tunes_with_init_and_stays_narrow(trained, tmp_path, capfd):
    slim = tmp_path / "slim.safetensors"
    assert _cli(["prune", "--checkpoint", trained / "run" / "best.safetensors", "--out", slim],
                capfd)[0] == 0
    code, _, err = _cli(["train", "--model", "unet_resnet18", "--init", slim, "--dataset",
                         "folder", "--data-root", trained / "data", "--epochs", "1",
                         "--batch-size", "2", "--workers", "0", "--device", "cpu", "--out",
                         tmp_path / "ft"], capfd)
    assert code == 0, err
    tuned = tmp_path / "ft" / "best.safetensors"
    meta = read_checkpoint_metadata(tuned)
    assert meta.extra["pruned"]["ratio"] == 0.6 and meta.extra["recipe"]["init"] == slim.name
    assert "val_miou" in meta.extra
    net = load_checkpoint(tuned)[0].net
    assert net.encoder.conv1.weight.shape[0] == load_checkpoint(slim)[0].net.encoder.conv1.weight.shape[0]

    # Resumed without --init, the full-width network cannot take the pruned state: one line.
    code, _, err = _cli(["train", "--model", "unet_resnet18", "--resume", "--dataset", "folder",
                         "--data-root", trained / "data", "--epochs", "2", "--batch-size", "2",
                         "--workers", "0", "--device", "cpu", "--out", tmp_path / "ft"], capfd)
    assert code == 2 and "--init" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("case", ["segnet", "ratio", "init_other_model", "init_missing",
                                  "twice"])
def test_bad_requests_get_one_line_and_exit_2(case, trained, tmp_path, capfd):
    source = trained / "run" / "best.safetensors"
    if case == "segnet":
        from rtseg.engines import untrained_engine

        seg = untrained_engine("segnet_vgg16", (64, 64), tmp_path)
        argv, says = ["prune", "--checkpoint", seg, "--out", tmp_path / "s.safetensors"], "UNet"
    elif case == "ratio":
        argv, says = ["prune", "--checkpoint", source, "--out", tmp_path / "s.safetensors",
                      "--ratio", 1.5], "between 0 and 1"
    elif case == "twice":
        once = tmp_path / "once.safetensors"
        assert _cli(["prune", "--checkpoint", source, "--out", once], capfd)[0] == 0
        argv, says = ["prune", "--checkpoint", once, "--out", tmp_path / "t.safetensors"], \
            "already pruned"
    else:
        init = source if case == "init_other_model" else tmp_path / "none.safetensors"
        argv = ["train", "--model", "unet_resnet34", "--init", init, "--dataset", "folder",
                "--data-root", trained / "data", "--epochs", "1", "--device", "cpu",
                "--out", tmp_path / "x"]
        says = "not unet_resnet34" if case == "init_other_model" else "no such file"
    code, _, err = _cli(argv, capfd)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err
