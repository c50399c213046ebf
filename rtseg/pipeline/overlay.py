"""What a viewer sees: the class colours blended over the frame, a class legend and a HUD
band with FPS and stage times.

Labels are resized with ``rtseg.imageops.resize_nearest``, the function ``rtseg eval`` uses,
so the overlay shows exactly the labels that are scored and saved as masks.
"""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from rtseg.imageops import resize_nearest
from rtseg.pipeline.stats import RunStats
from rtseg.visualize import blend, colorize, palette_lut


class Overlay:
    """Colours labels with the palette (a lookup table), blends them over the frame and
    draws a class legend (top right) and a HUD band (bottom) with FPS and stage times."""

    def __init__(self, palette: Sequence[Sequence[int]], class_names: Sequence[str],
                 alpha: float = 0.5, legend: bool = True, hud: bool = True):
        self.lut = palette_lut(palette)
        self.class_names = list(class_names)
        self.alpha = float(alpha)
        self.show_legend, self.show_hud = legend, hud
        self._legend: dict[tuple[int, int], Optional[tuple[np.ndarray, int, int]]] = {}

    @staticmethod
    def _row(h: int) -> tuple[int, float]:
        row = max(12, round(h * 0.032))
        return row, row / 30.0

    @staticmethod
    def hud_rect(h: int, w: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the HUD band, the only part of a frame that changes with time."""
        row, _ = Overlay._row(h)
        return 0, max(h - int(row * 1.5), 0), w, h

    def _legend_patch(self, h: int, w: int):
        """Built once per frame size; None when the frame is too small to hold it."""
        key = (h, w)
        if key not in self._legend:
            row, scale = self._row(h)
            pad = max(2, row // 4)
            text_w = max(cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
                         for n in self.class_names)
            ph, pw = pad + len(self.class_names) * row + pad, pad + row + pad + text_w + pad
            if ph > h - 2 * pad - int(row * 1.5) or pw > w // 2:
                self._legend[key] = None
            else:
                patch = np.full((ph, pw, 3), 32, np.uint8)
                for i, name in enumerate(self.class_names):
                    y = pad + i * row
                    colour = tuple(int(c) for c in self.lut[i])
                    cv2.rectangle(patch, (pad, y + 2), (pad + row - 3, y + row - 3), colour, -1)
                    cv2.putText(patch, name, (2 * pad + row, y + row - pad), cv2.FONT_HERSHEY_SIMPLEX,
                                scale, (255, 255, 255), 1, cv2.LINE_AA)
                self._legend[key] = (patch, pad, w - pw - pad)
        return self._legend[key]

    def render(self, image: np.ndarray, labels: np.ndarray, hud: str = "") -> np.ndarray:
        """Overlay of network-size ``labels`` on the full-size BGR ``image`` (a new array)."""
        h, w = image.shape[:2]
        # Colouring at network size then resizing nearest gives exactly the colours of the
        # full-size label map, at a fraction of the cost.
        colours = resize_nearest(colorize(labels, self.lut), (h, w))
        return self.decorate(blend(image, colours, self.alpha), hud)

    def decorate(self, out: np.ndarray, hud: str = "") -> np.ndarray:
        """The legend and the HUD drawn onto the blended frame ``out`` (in place; returned)."""
        h, w = out.shape[:2]
        if self.show_legend:
            legend = self._legend_patch(h, w)
            if legend is not None:
                patch, y, x = legend
                out[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
        if self.show_hud and hud:
            x0, y0, x1, y1 = self.hud_rect(h, w)
            out[y0:y1, x0:x1] = cv2.convertScaleAbs(out[y0:y1, x0:x1], alpha=0.35)
            row, scale = self._row(h)
            cv2.putText(out, hud, (x0 + row // 3, y1 - row // 3), cv2.FONT_HERSHEY_SIMPLEX,
                        scale, (255, 255, 255), 1, cv2.LINE_AA)
        return out


def hud_text(stats: RunStats, tc: Optional[float] = None) -> str:
    """``24.8 FPS | pre 1.2 infer 38.0 post 2.9 write 5.1 ms`` (``| TC 0.953`` with ``tc``)."""
    ms = stats.stage_ms()

    def f(v):
        return "-" if v is None else f"{v:.1f}"

    return (f"{stats.recent_fps():.1f} FPS | pre {f(ms['preprocess'])} infer {f(ms['infer'])} "
            f"post {f(ms['overlay'])} write {f(ms['write'])} ms"
            + (f" | TC {tc:.3f}" if tc is not None else ""))
