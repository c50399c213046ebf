"""Engine metadata: round trips, and files whose metadata is malformed (a missing key is in
the bad-input table of test_bad_input.py)."""

import pytest

from rtseg.errors import BadInput
from rtseg.metadata import REQUIRED_KEYS, EngineMetadata

from helpers import engine_meta


def camvid_meta(**changes) -> dict:
    d = engine_meta("segnet_r50", (352, 480), val_miou=0.5).to_dict()
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
