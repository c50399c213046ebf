"""The four networks: shapes, the ONNX-friendly unpooling, the registry, encoder weights."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from rtseg.data.classes import IMAGENET_MEAN, IMAGENET_STD
from rtseg.errors import BadInput
from rtseg.models import MODELS, Segmenter, build_model, canonical_name
from rtseg.models.segnet import SegNetVGG16
from rtseg.models.unpool import max_pool_with_mask, max_unpool_with_mask


def reference_unpool(x, y):
    _, idx = F.max_pool2d(x, 2, 2, return_indices=True)
    return F.max_unpool2d(y, idx, 2, 2, output_size=x.shape[-2:])


@pytest.mark.parametrize("seed", range(6))
def test_unpool_equals_maxunpool2d(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, 12, 16, generator=g)
    if seed % 2:  # small integers force ties inside windows: the tie rule must match too
        x = torch.randint(0, 3, x.shape, generator=g).float()
    pooled, mask = max_pool_with_mask(x)
    torch.testing.assert_close(pooled, F.max_pool2d(x, 2, 2), rtol=0, atol=0)
    y = torch.randn(pooled.shape, generator=g)
    torch.testing.assert_close(max_unpool_with_mask(y, mask), reference_unpool(x, y),
                               rtol=0, atol=0)
    assert torch.all(mask.sum(dim=2) == 1)  # one position per window


def test_unpool_ties_pick_first_in_row_major_order():
    x = torch.ones(1, 1, 2, 2)
    _, mask = max_pool_with_mask(x)
    out = max_unpool_with_mask(torch.full((1, 1, 1, 1), 5.0), mask)
    assert out.flatten().tolist() == [5.0, 0.0, 0.0, 0.0]


def test_unpool_rejects_odd_sizes():
    with pytest.raises(ValueError, match="even"):
        max_pool_with_mask(torch.zeros(1, 1, 5, 4))


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_maps_frames_to_labels(name):
    torch.manual_seed(0)
    seg = Segmenter(build_model(name, 11), IMAGENET_MEAN, IMAGENET_STD).eval()
    frames = torch.randint(0, 256, (2, 32, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        labels = seg(frames)
        logits = seg.logits(frames)
    assert labels.shape == (2, 32, 64) and labels.dtype == torch.uint8
    assert logits.shape == (2, 11, 32, 64)
    assert int(labels.max()) < 11


def test_segnet_vgg16_has_no_skip_concatenation_and_uses_five_pools():
    net = SegNetVGG16(11)
    assert len(net.encoder) == len(net.decoder) == 5
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 + 13 + 1  # encoder, mirrored decoder, classifier
    # Every decoder conv sees exactly its mirror's width: no concatenated channels.
    assert all(c.in_channels in (64, 128, 256, 512) for c in convs[13:])


def test_segmenter_normalises_bgr_frames_like_rgb_imagenet_stats():
    seg = Segmenter(torch.nn.Identity(), IMAGENET_MEAN, IMAGENET_STD)
    bgr = torch.tensor([[[[10, 20, 30]]]], dtype=torch.uint8)
    x = seg.normalise(bgr)  # [1, 3, 1, 1] RGB
    expected = [(30 - 123.675) / 58.395, (20 - 116.28) / 57.12, (10 - 103.53) / 57.375]
    np.testing.assert_allclose(x.flatten().numpy(), expected, rtol=1e-6)


def test_registry_aliases():
    assert canonical_name("unet_resnet50") == "unet_r50"
    assert canonical_name("segnet_resnet50") == "segnet_r50"
    assert canonical_name("unet_resnet18") == "unet_resnet18"  # any smp encoder


def test_encoder_weights_from_a_local_file(tmp_path):
    donor = build_model("unet_resnet18", 11)
    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in donor.encoder.state_dict().items()}, str(path))
    model = build_model("unet_resnet18", 11, encoder_weights=str(path))
    for k, v in donor.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[k], v)


def test_segnet_encoder_weights_from_torchvision_layout(tmp_path):
    from torchvision.models import resnet50, vgg16_bn

    vgg = vgg16_bn(weights=None)
    path = tmp_path / "vgg.pth"
    torch.save(vgg.state_dict(), path)  # a plain state dict: loads with weights_only=True
    model = build_model("segnet_vgg16", 11, encoder_weights=str(path))
    torch.testing.assert_close(model.encoder[0][0][0].weight, vgg.features[0].weight)

    r = resnet50(weights=None)
    path = tmp_path / "r50.safetensors"
    save_file({k: v.contiguous() for k, v in r.state_dict().items()}, str(path))
    model = build_model("segnet_r50", 11, encoder_weights=str(path))
    torch.testing.assert_close(model.layers[3][0].conv1.weight, r.layer4[0].conv1.weight)


def test_wrong_encoder_weights_file_is_bad_input(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(3)}, str(path))
    with pytest.raises(BadInput, match="does not fit"):
        build_model("segnet_r50", 11, encoder_weights=str(path))


def test_imagenet_download_failure_is_one_clear_error(monkeypatch):
    """Offline, `imagenet` must fail with a hint, not a traceback (the real download is used
    for users online; here we cut it off so the test is the same on every machine)."""
    import segmentation_models_pytorch.encoders as smp_encoders
    import torchvision.models._api as tv_api

    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(smp_encoders, "hf_hub_download", offline)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    for name in ("unet_r50", "segnet_vgg16"):
        with pytest.raises(BadInput,
                           match="could not download ImageNet weights.*--encoder-weights"):
            build_model(name, 11, encoder_weights="imagenet")


def test_flops_count_a_convolution_exactly_and_scale_with_pixels():
    from rtseg.models.flops import count_flops

    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(conv, (10, 12)) == 2 * 3 * 8 * 9 * 10 * 12
    net = build_model("unet_resnet18", 11)
    assert count_flops(net, (32, 64)) == pytest.approx(2 * count_flops(net, (32, 32)), rel=0.02)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_batchnorm_folding_keeps_the_logits(name):
    from rtseg.models.fusion import fold_batchnorm

    torch.manual_seed(0)
    net = build_model(name, 11).eval()
    for m in net.modules():  # non-trivial statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
        batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
        folded = fold_batchnorm(net)
        after = net(x)
    assert folded >= 0.9 * batchnorms  # every conv→BN pair; a BN after a non-conv stays
    assert torch.allclose(before, after, rtol=1e-3, atol=1e-3 * before.abs().max().item())
