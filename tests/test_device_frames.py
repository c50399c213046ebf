"""The frame path on the engine's device (rtseg.pipeline.device_frames), run on the CPU: the
resize equals OpenCV's bit for bit, and the whole path — resize, engine, colours, blend —
gives the numpy pipeline's labels and its overlay within 1 LSB, on real dashcam frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rtseg.backends import open_engine  # noqa: E402
from rtseg.imageops import resize_frame  # noqa: E402
from rtseg.pipeline import Overlay  # noqa: E402
from rtseg.pipeline.device_frames import DeviceFrames  # noqa: E402


class _CpuEngine:
    input_size = (64, 96)


@pytest.mark.parametrize("src, dst", [
    ((540, 960), (320, 448)),  # the dashcam clip at the bundled int8 graph's input
    ((720, 960), (352, 480)),
    ((120, 160), (64, 96)), ((37, 53), (32, 40)), ((50, 200), (64, 96)), ((40, 56), (64, 96)),
    ((40, 56), (64, 56)), ((7, 9), (64, 96)), ((64, 96), (64, 96)),
])
def test_the_resize_equals_opencvs_bit_for_bit(src, dst):
    image = np.random.default_rng(sum(src)).integers(0, 256, (*src, 3), dtype=np.uint8)
    path = DeviceFrames(_CpuEngine(), np.zeros((256, 3), np.uint8), 0.5)
    got = path.resize_linear(torch.from_numpy(image), dst).numpy()
    np.testing.assert_array_equal(got, cv2.resize(image, dst[::-1],
                                                  interpolation=cv2.INTER_LINEAR))


def dashcam_frames(clip, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(clip))
    frames = [cap.read()[1] for _ in range(count)]
    cap.release()
    return frames


def test_the_device_path_gives_the_pipelines_labels_and_overlay(dashcam_clip, engine_path):
    frames = dashcam_frames(dashcam_clip, 3)
    # frames of other sizes: enlarged in one direction, and in both
    frames += [cv2.resize(frames[0], (200, 50)), cv2.resize(frames[1], (48, 32))]
    with open_engine(engine_path, "cpu") as backend:
        meta = backend.metadata
        overlay = Overlay(meta.palette, meta.class_names, 0.5, legend=False, hud=False)
        want_labels = backend.infer(np.stack([resize_frame(f, backend.input_size)
                                              for f in frames]))
        want = [overlay.render(f, lab) for f, lab in zip(frames, want_labels)]
        got, labels = DeviceFrames(backend, overlay.lut, overlay.alpha).run(frames,
                                                                           want_labels=True)
    np.testing.assert_array_equal(labels, want_labels)
    assert len(np.unique(labels)) > 1  # a real picture, not one class everywhere
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == np.uint8
        assert np.abs(g.astype(int) - w).max() <= 1


class Keeper:
    """A sink that keeps every overlay and its labels, in order."""

    def __init__(self):
        self.items = []

    def write(self, item):
        self.items.append((item.frame.name, item.overlay.copy(), item.labels.copy()))

    def close(self):
        pass


def test_rtseg_run_with_device_frames_equals_the_numpy_path(dashcam_clip, engine_path, tmp_path):
    from rtseg.pipeline import Sink, run

    Sink.register(Keeper)
    kept = {}
    with open_engine(engine_path, "cpu") as backend:
        for on in (False, True):
            kept[on] = Keeper()
            result = run(str(dashcam_clip), backend, sinks=[kept[on]], max_frames=6, batch=4,
                         hud=False, device_frames=on, masks=tmp_path / f"m{on}")
            assert result["frames"] == 6
        several = run([str(dashcam_clip)] * 2, backend, max_frames=3, batch=4, hud=False,
                      device_frames=True, masks=tmp_path / "several")
    assert [s["frames"] for s in several["streams"]] == [3, 3]
    for (name, picture, labels), (name2, picture2, labels2) in zip(kept[False].items,
                                                                   kept[True].items):
        assert name == name2
        np.testing.assert_array_equal(labels, labels2)
        assert np.abs(picture.astype(int) - picture2).max() <= 1
    for masks in (tmp_path / "mTrue", tmp_path / "several" / "solidWhiteRight-2"):
        for path in sorted(masks.glob("*.png"))[:3]:
            np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED),
                                          cv2.imread(str(tmp_path / "mFalse" / path.name),
                                                     cv2.IMREAD_UNCHANGED))


def test_device_frames_need_a_pytorch_engine(tmp_path):
    from helpers import FakeBackend

    from rtseg.errors import BadInput
    from rtseg.pipeline import run

    video = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (32, 24))
    writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()
    with pytest.raises(BadInput, match="--device-frames needs a PyTorch engine"):
        run(str(video), FakeBackend(), device_frames=True, output=tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()
