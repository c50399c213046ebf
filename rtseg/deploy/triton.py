"""A Triton Inference Server model repository around the ONNX deploy graph
(``rtseg export --triton-repo DIR``): ``DIR/<model>/config.pbtxt`` and ``1/model.onnx``."""

from __future__ import annotations

import time
from pathlib import Path

from rtseg.deploy.export import OPSET, Log, deploy_graph, write_model
from rtseg.deploy.calibration import Calibration
from rtseg.errors import BadInput
from rtseg.files import atomic_write
from rtseg.metadata import INPUT_NAME, OUTPUT_NAME, EngineMetadata


def triton_config(metadata: EngineMetadata, max_batch: int = 8, name: str | None = None) -> str:
    """``config.pbtxt`` text (a Triton ``ModelConfig``) for an rtseg deploy graph.

    Dims exclude the batch dimension, which Triton adds because ``max_batch_size > 0``.
    """
    if int(max_batch) < 1:
        raise BadInput(f"--max-batch must be at least 1, got {max_batch}")
    h, w = (int(v) for v in metadata.input_size)
    name = name or metadata.model
    return f"""\
# Written by rtseg export: {metadata.model} trained on {metadata.dataset}, {metadata.precision}.
# frames: uint8 BGR [N, {h}, {w}, 3]; labels: uint8 class ids [N, {h}, {w}]
# (class names and palette are in the model's ONNX metadata_props).
name: "{name}"
backend: "onnxruntime"
max_batch_size: {int(max_batch)}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_UINT8
    dims: [ {h}, {w}, 3 ]
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_UINT8
    dims: [ {h}, {w} ]
  }}
]
dynamic_batching {{ }}
instance_group [
  {{
    count: 1
    kind: KIND_AUTO
  }}
]
"""


def export_triton_repo(checkpoint: Path | str, repo_dir: Path | str, fp16: bool = False,
                       size: tuple[int, int] | None = None, max_batch: int = 8,
                       log: Log | None = None, calib: Calibration | None = None) -> Path:
    """Write a Triton model repository: ``DIR/<model>/config.pbtxt`` and
    ``DIR/<model>/1/model.onnx`` (int8 Q/DQ with ``calib``, as ``export_onnx``). Returns the
    model's directory."""
    log = log or (lambda _msg: None)
    repo_dir = Path(repo_dir)
    if repo_dir.exists() and not repo_dir.is_dir():
        raise BadInput(f"--triton-repo {repo_dir} exists and is not a directory")
    if int(max_batch) < 1:
        raise BadInput(f"--max-batch must be at least 1, got {max_batch}")
    t0 = time.perf_counter()
    model, meta = deploy_graph(checkpoint, fp16=fp16, size=size, opset=OPSET, calib=calib,
                                log=log, where=f" into Triton repository {repo_dir}")
    model_dir = repo_dir / meta.model
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    nbytes = write_model(model, model_dir / "1" / "model.onnx")
    atomic_write(model_dir / "config.pbtxt", triton_config(meta, max_batch))
    log(f"wrote {model_dir}/config.pbtxt and 1/model.onnx ({nbytes / 2**20:.1f} MiB) in "
        f"{time.perf_counter() - t0:.1f} s")
    return model_dir
