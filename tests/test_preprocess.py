"""The multi-size pipeline gives tensors bit-identical to timm's own eval transform."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from hiera_bench.preprocess import EvalPreprocess, MultiSizeTransform, normalise

SIZES = list(range(32, 385, 32))


def images():
    rng = np.random.default_rng(0)
    shapes = [(500, 375), (375, 500), (97, 203), (640, 640), (33, 1000)]
    out = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in shapes]
    out.append(Image.fromarray(rng.integers(0, 256, (300, 200), dtype=np.uint8), mode="L").convert("RGB"))
    return out


@pytest.mark.parametrize("model_name", ["hiera_small_224.mae_in1k_ft_in1k", "hiera_small_abswin_256.sbb2_e200_in12k_ft_in1k"])
def test_identical_to_timm_transform_for_pretrained_cfg(model_name):
    with torch.device("meta"):
        net = timm.create_model(model_name, pretrained=False)
    pre = EvalPreprocess.from_config(net.pretrained_cfg)
    multi = MultiSizeTransform(pre, SIZES)
    for img in images():
        crops = multi(img)
        for size in SIZES:
            # resolve_data_config(model=...) gives the pretrained size: the size must be passed explicitly
            reference = create_transform(**resolve_data_config({"input_size": (3, size, size)}, model=net))(img)
            ours = normalise(crops[size, pre.crop_pct][None], pre.mean, pre.std)[0]
            assert crops[size, pre.crop_pct].dtype == torch.uint8
            assert torch.equal(ours, reference), (model_name, img.size, size)


@pytest.mark.parametrize("crop_pct,interpolation", [(0.875, "bilinear"), (1.0, "bicubic"), (0.95, "bicubic")])
def test_identical_with_overrides(crop_pct, interpolation):
    pre = EvalPreprocess.from_config({}, crop_pct=crop_pct, interpolation=interpolation)
    multi = MultiSizeTransform(pre, [64, 224, 320])
    img = images()[0]
    for (size, _), crop in multi(img).items():
        assert torch.equal(normalise(crop[None], pre.mean, pre.std)[0], pre.timm_transform(size)(img))


def test_scale_size_is_floor_of_size_over_crop_pct():
    resize = EvalPreprocess.from_config({"crop_pct": 0.9}).geometric(288).transforms[0]
    assert resize.size == 320  # floor(288 / 0.9)
