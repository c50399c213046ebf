"""Engine metadata: round trips, and files whose metadata is missing or malformed."""

import pytest

from rtseg.data.classes import CAMVID, IMAGENET_MEAN, IMAGENET_STD
from rtseg.errors import BadInput
from rtseg.metadata import REQUIRED_KEYS, EngineMetadata


def camvid_meta(**changes) -> dict:
    d = EngineMetadata(model="segnet_r50", num_classes=11, class_names=list(CAMVID.class_names),
                       palette=[list(c) for c in CAMVID.palette], ignore_index=11,
                       input_size=[352, 480], dataset="camvid", mean=IMAGENET_MEAN,
                       std=IMAGENET_STD, extra={"val_miou": 0.5}).to_dict()
    d.update(changes)
    return d


def test_round_trip_through_strings_keeps_contract_keys_and_extras():
    meta = EngineMetadata.from_dict(camvid_meta())
    back = EngineMetadata.from_strings(meta.to_strings())
    assert back == meta and back.extra["val_miou"] == 0.5
    assert set(REQUIRED_KEYS) <= set(meta.to_strings())


@pytest.mark.parametrize("changes,message", [
    ({"num_classes": "eleven"}, "malformed"),
    ({"input_size": "ab"}, "malformed"),
    ({"input_size": [352]}, "not \\[H, W\\]"),
    ({"palette": 5}, "malformed"),
    ({"num_classes": 12}, "inconsistent"),
    ({"dataset": "camvid\ninstance_group [ ]"}, "invalid dataset name"),
    ({"model": "../../etc"}, "invalid model name"),
])
def test_malformed_metadata_is_one_clear_bad_input(changes, message):
    with pytest.raises(BadInput, match=message):
        EngineMetadata.from_dict(camvid_meta(**changes), source="x.onnx")


def test_missing_key_is_named():
    d = camvid_meta()
    del d["palette"]
    with pytest.raises(BadInput, match="x.onnx lacks metadata key\\(s\\) palette"):
        EngineMetadata.from_dict(d, source="x.onnx")
