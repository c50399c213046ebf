"""What a --source argument names (a file or folder here, a camera, a URL), checked before an
engine loads, and the stage that bounds a run."""

import pytest

from rtseg.errors import BadInput
from rtseg.pipeline.sources import check_source, is_camera, names_path
from rtseg.pipeline.stats import bound_by


@pytest.mark.parametrize("spec, path, camera", [
    ("0", False, True), ("rtsp://cam.local/stream", False, False),
    ("https://host/clip.mp4", False, False), ("drive.mp4", True, False),
    ("frames/0", True, False)])
def test_a_source_is_a_camera_a_url_or_a_path(spec, path, camera):
    assert names_path(spec) is path and is_camera(spec) is camera


def test_a_missing_file_source_fails_naming_the_flag(tmp_path):
    with pytest.raises(BadInput, match=r"^--calib .*missing\.mp4: no such file or directory$"):
        check_source(tmp_path / "missing.mp4", "--calib")
    check_source(tmp_path)  # a folder that exists
    check_source("0")  # a camera and a URL are only known when opened
    check_source("rtsp://cam.local/stream")


def test_bound_by_is_the_slowest_timed_stage():
    assert bound_by({"capture": 2.0, "infer": 9.5, "overlay": None, "write": 3.0}) == "infer"
    assert bound_by({"capture": None}) is None and bound_by({}) is None
