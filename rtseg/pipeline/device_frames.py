"""The frame path on the engine's device, in PyTorch: frames go up once, as uint8 at their own
size; the resize to the network input, the engine (normalise, network, argmax), colouring the
labels, upsampling the colours and blending them over the frame all run there; only the
finished overlay comes back, and the labels when a sink or live mIoU needs them.

On CUDA the uploads go through pinned host buffers (a ring of two per frame size, so a copy
overlaps the work on the previous one), and the engine replays a CUDA graph captured for
each batch shape (up to MAX_GRAPHS; eager, after one warning line, where capture fails). The
same code runs on the CPU, where the tests hold it to the numpy path of the pipeline
(``imageops.resize_frame``, ``Backend.infer``, ``Overlay.render``): the same labels, the
overlay within 1 LSB.

The resize is OpenCV's ``INTER_LINEAR`` for uint8, bit for bit: the same 11-bit fixed-point
coefficients, the horizontal pass in integers, the vertical pass as OpenCV's vector code does
it (``(((row0 >> 4) * beta0) >> 16) + (((row1 >> 4) * beta1) >> 16) + 2) >> 2``), the edge
pixels as OpenCV takes them; checked against ``cv2.resize`` in the tests, shrinking and
enlarging. Imports torch: not imported by ``rtseg.pipeline`` itself.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from rtseg.imageops import nearest_index
from rtseg.pipeline.frames import Batch, Frame

COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
RING = 2  # pinned staging buffers per frame size: one filling while one is copied
MAX_GRAPHS = 4  # batch shapes captured as CUDA graphs (each holds its own memory); then eager


@functools.lru_cache(maxsize=64)
def linear_taps(src: int, dst: int, rows: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps along one axis, ``src`` → ``dst`` positions: the two source
    indices of each output position and their 11-bit fixed-point weights (int64 arrays).
    Past the border OpenCV takes the edge pixel: along a row with weights (1, 0), down the
    columns (``rows``) with the weights as computed, both taps on the edge row."""
    scale = src / dst
    fx = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    sx = np.floor(fx).astype(np.int64)
    fx = (fx - sx).astype(np.float32)
    if rows:
        first, second = np.clip(sx, 0, src - 1), np.clip(sx + 1, 0, src - 1)
    else:
        low, high = sx < 0, sx >= src - 1
        fx[low | high] = 0
        sx[low] = 0
        sx[high] = src - 1
        first, second = sx, np.minimum(sx + 1, src - 1)
    one = np.float32(1 << COEF_BITS)
    w0 = np.rint((np.float32(1) - fx) * one).astype(np.int64)
    w1 = np.rint(fx * one).astype(np.int64)
    return first, second, w0, w1


class DeviceFrames:
    """The device path for one engine with ``infer_torch`` (the PyTorch backend) and one
    overlay's colours (``lut``: [256, 3] BGR uint8, ``alpha``: their weight).

    >>> path = DeviceFrames(backend, overlay.lut, overlay.alpha)
    >>> overlays, labels = path.run([frame_a, frame_b], want_labels=True)
    """

    def __init__(self, backend, lut: np.ndarray, alpha: float,
                 on_message: Optional[Callable[[str], None]] = None, graphs: bool = True):
        self.backend = backend
        self.on_message = on_message or (lambda _m: None)
        self.device = torch.device(getattr(backend, "torch_device", "cpu"))
        self.cuda = self.device.type == "cuda"
        self.input_size = tuple(backend.input_size)
        self.lut = torch.from_numpy(np.ascontiguousarray(lut)).to(self.device)
        self.alpha = float(np.float32(alpha))
        self._staging: dict[tuple, list] = {}
        self._turn: dict[tuple, int] = {}
        self._tables: dict[tuple, tuple] = {}
        self.graphs = graphs and self.cuda  # False once a capture failed
        self._graphs: dict[tuple, tuple] = {}  # batch shape → (static input, replay, output)

    # -- up ---------------------------------------------------------------------------------
    def upload(self, image: np.ndarray) -> torch.Tensor:
        """``image`` (uint8 [H, W, 3]) on the device; on CUDA through a pinned buffer, the
        copy left to run while the caller goes on."""
        if not self.cuda:
            return torch.from_numpy(np.ascontiguousarray(image))
        key = image.shape
        ring = self._staging.get(key)
        if ring is None:
            ring = self._staging[key] = [
                (torch.empty(key, dtype=torch.uint8, pin_memory=True), torch.cuda.Event())
                for _ in range(RING)]
            self._turn[key] = 0
        turn = self._turn[key]
        self._turn[key] = (turn + 1) % RING
        buffer, copied = ring[turn]
        copied.synchronize()  # its previous copy has left the buffer
        buffer.numpy()[...] = image
        out = buffer.to(self.device, non_blocking=True)
        copied.record()
        return out

    # -- on the device ----------------------------------------------------------------------
    def _taps(self, src: int, dst: int, rows: bool) -> tuple[torch.Tensor, ...]:
        key = ("linear", src, dst, rows)
        if key not in self._tables:
            self._tables[key] = tuple(torch.from_numpy(v).to(self.device)
                                      for v in linear_taps(src, dst, rows))
        return self._tables[key]

    def resize_linear(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """uint8 [H, W, 3] → [h, w, 3] as ``cv2.resize(INTER_LINEAR)`` (see the module note)."""
        h, w = size
        if tuple(image.shape[:2]) == (h, w):
            return image
        x0, x1, a0, a1 = self._taps(image.shape[1], w, rows=False)
        y0, y1, b0, b1 = self._taps(image.shape[0], h, rows=True)
        src = image.to(torch.int32)
        a0, a1 = a0.to(torch.int32)[None, :, None], a1.to(torch.int32)[None, :, None]
        rows = src[:, x0] * a0 + src[:, x1] * a1  # [H, w, 3], 11 fractional bits
        b0, b1 = b0.to(torch.int32)[:, None, None], b1.to(torch.int32)[:, None, None]
        out = (((rows[y0] >> 4) * b0) >> 16) + (((rows[y1] >> 4) * b1) >> 16)
        return ((out + 2) >> 2).clamp_(0, 255).to(torch.uint8)

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` uploaded once: (the frame, the frame at the network input), on the
        device."""
        frame = self.upload(image)
        return frame, self.resize_linear(frame, self.input_size)

    def overlay(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The class colours of network-size ``labels`` upsampled (nearest, as OpenCV) to
        ``image``'s size and blended over it: uint8 [H, W, 3], still on the device."""
        h, w = image.shape[:2]
        key = ("nearest", tuple(labels.shape), h, w)
        if key not in self._tables:
            rows = torch.from_numpy(np.array(nearest_index(labels.shape[0], h)))
            cols = torch.from_numpy(np.array(nearest_index(labels.shape[1], w)))
            self._tables[key] = (rows.to(self.device), cols.to(self.device))
        rows, cols = self._tables[key]
        colours = self.lut[labels.long()][rows][:, cols]
        mixed = image.float() * (1.0 - self.alpha) + colours.float() * self.alpha
        return mixed.round_().clamp_(0, 255).to(torch.uint8)

    # -- the pipeline's stages (--device-frames) ------------------------------------------
    def batch(self, frames: Sequence[Frame], ended: Sequence[int] = ()) -> Batch:
        """Preprocess: the frames uploaded, and resized on the device."""
        with torch.inference_mode():
            pairs = [self.prepare(f.image) for f in frames]
        if not pairs:
            return Batch(list(frames), None, ended=list(ended))
        return Batch(list(frames), torch.stack([p[1] for p in pairs]), ended=list(ended),
                     on_device=[p[0] for p in pairs])

    def segment(self, inputs: torch.Tensor) -> torch.Tensor:
        """Infer: the engine on the device-resident inputs; labels stay there. On CUDA a
        batch shape seen before replays its captured graph."""
        with torch.inference_mode():
            key = tuple(inputs.shape)
            if not self.graphs or (key not in self._graphs and len(self._graphs) >= MAX_GRAPHS):
                return self.backend.infer_torch(inputs)
            if key not in self._graphs:
                try:
                    self._graphs[key] = self._capture(inputs)
                except Exception as exc:  # noqa: BLE001 — eager is always right
                    self.graphs = False
                    self._graphs.clear()
                    self.on_message(f"warning: CUDA graph capture failed ({type(exc).__name__}:"
                                    f" {exc}); the engine runs eagerly")
                    return self.backend.infer_torch(inputs)
            static, replay, out = self._graphs[key]
            static.copy_(inputs)
            replay()
            return out.clone()  # the next replay overwrites ``out`` while these are drawn

    def _capture(self, inputs: torch.Tensor) -> tuple:
        """The engine on a batch of ``inputs``' shape, captured in a CUDA graph (after warm-up
        calls on a side stream: cuDNN's choices and allocations stay outside the graph)."""
        static = inputs.clone()
        net = self.backend.infer_torch
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                net(static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the preprocess and overlay threads keep uploading and copying while
        # this thread captures; the default ("global") would fail their CUDA calls meanwhile.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = net(static)
        return static, graph.replay, out

    def draw(self, batch: Batch, i: int) -> np.ndarray:
        """Overlay: frame i's colours blended on the device; the finished picture comes back."""
        with torch.inference_mode():
            return self.overlay(batch.on_device[i], batch.labels[i]).cpu().numpy()

    # -- the whole path ---------------------------------------------------------------------
    def run(self, images: Sequence[np.ndarray], want_labels: bool = False
            ) -> tuple[list[np.ndarray], Optional[np.ndarray]]:
        """Segment ``images`` (BGR uint8, any sizes) in one engine call: each frame's overlay
        (host uint8 [H, W, 3], legend and HUD not drawn) and, with ``want_labels``, the
        labels at network size (uint8 [N, h, w])."""
        with torch.inference_mode():
            frames, inputs = zip(*(self.prepare(image) for image in images))
            labels = self.backend.infer_torch(torch.stack(inputs))
            overlays = [self.overlay(frame, lab) for frame, lab in zip(frames, labels)]
            host = [o.cpu().numpy() for o in overlays]
            return host, (labels.cpu().numpy() if want_labels else None)
