"""What a TensorRT engine build will do, decided before TensorRT is touched, so a bad input is
reported on any machine: the graph's metadata, the precision plan (strongly typed network;
which precision a graph can give), the dynamic-batch profile, the deploy-contract I/O check and
the parser's error report. ``rtseg.deploy.engine_build`` carries the plan out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from rtseg.errors import BadInput, MissingDependency
from rtseg.files import ensure_parent
from rtseg.metadata import INPUT_NAME, OUTPUT_NAME, EngineMetadata

PRECISIONS = ("fp16", "fp32", "int8")


@dataclass(frozen=True)
class BuildPlan:
    """How to configure TensorRT for one (TensorRT major, graph precision, request) triple."""

    creation_flags: tuple[str, ...]  # trt.NetworkDefinitionCreationFlag member names
    builder_flags: tuple[str, ...]  # trt.BuilderFlag member names (none: strongly typed)
    precision: str  # what the engine computes in; goes into the sidecar
    convert_to_fp16: bool = False  # build from graph_to_fp16(graph) instead of the graph


def plan_build(trt_major: int, graph_precision: str, requested: str) -> BuildPlan:
    """Decide network/builder flags; BadInput for combinations TensorRT cannot honour.

    Always strongly typed, so the engine computes in the precision of the graph it is given;
    an int8 Q/DQ graph gives an int8 engine the same way (explicit quantization: no
    ``BuilderFlag.INT8``, no calibrator).

    >>> plan_build(10, "fp32", "fp16")
    BuildPlan(creation_flags=('STRONGLY_TYPED',), builder_flags=(), precision='fp16', \
convert_to_fp16=True)
    """
    requested = check_precision(graph_precision, requested)
    if trt_major < 10:
        from rtseg.backends.tensorrt_backend import TRT_PIP_HINT  # torch: only when it is said

        raise MissingDependency(f"TensorRT {trt_major}.x is too old; rtseg needs TensorRT 10 "
                                f"or newer. {TRT_PIP_HINT}")
    # TensorRT 11+: strongly typed always; the flag is deprecated and ignored, so not passed.
    creation = ("STRONGLY_TYPED",) if trt_major == 10 else ()
    return BuildPlan(creation, (), requested,
                     convert_to_fp16=graph_precision == "fp32" and requested == "fp16")


def check_request(onnx_path: Path, out: Path, *, fp16: bool | None = None, int8: bool = False,
                  max_batch: int = 8, opt_batch: int = 1) -> str:
    """The checks of a build request that need neither the graph nor TensorRT, made before
    any work (BadInput naming the flag): the profile's batches, the plan's file name and
    directory, the graph's file, and the precision flags (``fp16``: True --fp16, False
    --fp32, None neither). Returns the precision to ask :func:`plan_build` for: int8, fp16,
    fp32, or auto (what the graph is made for: int8 for an int8 graph, else fp16).

    >>> check_request(Path("m.onnx"), Path("m.plan"), fp16=False)  # where m.onnx exists
    'fp32'
    """
    if not 1 <= opt_batch <= max_batch:
        raise BadInput(f"--opt-batch {opt_batch} must be between 1 and --max-batch ({max_batch})")
    if out.suffix.lower() not in (".plan", ".engine"):
        raise BadInput(f"--out {out.name}: the file name must end in .plan or .engine")
    if not onnx_path.is_file():
        raise BadInput(f"--onnx {onnx_path}: file not found")
    if int8 and fp16 is not None:
        raise BadInput(f"--int8 and --{'fp16' if fp16 else 'fp32'} exclude each other")
    ensure_parent(out, "--out")
    return "int8" if int8 else "auto" if fp16 is None else "fp16" if fp16 else "fp32"


def check_precision(graph_precision: str, requested: str) -> str:
    """The engine precision for a graph of ``graph_precision`` asked to build ``requested``
    (``auto``: int8 for an int8 Q/DQ graph, else fp16); BadInput for what cannot be built.
    Pure, so the build's input faults are reported on machines without TensorRT.

    >>> check_precision("int8", "auto"), check_precision("fp32", "auto")
    ('int8', 'fp16')
    """
    if requested not in (*PRECISIONS, "auto"):
        raise BadInput(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if graph_precision not in PRECISIONS:
        raise BadInput(f"the ONNX metadata says precision {graph_precision!r}; "
                       f"expected one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        return "int8" if graph_precision == "int8" else "fp16"
    if graph_precision == "int8" and requested != "int8":
        raise BadInput(f"this ONNX graph is int8 (Q/DQ nodes fix where int8 is computed), so "
                       f"it cannot give an {requested} engine; build it without --fp16/--fp32, "
                       "or build the fp32 export for a float engine")
    if requested == "int8" and graph_precision != "int8":
        raise BadInput(f"--int8 needs an int8 graph with Q/DQ nodes (this one's precision is "
                       f"{graph_precision}); make one with rtseg export --int8 --calib SRC "
                       "(TensorRT 11 has no implicit int8 calibration)")
    if graph_precision == "fp16" and requested == "fp32":
        raise BadInput("this ONNX graph was exported with --fp16, so it cannot give an fp32 "
                       "engine; export again without --fp16, or build with --fp16")
    return requested


def check_int8_target(meta: EngineMetadata) -> None:
    """BadInput for an int8 graph quantized for ONNX Runtime on CPUs (``rtseg export --int8
    --int8-target cpu``): its uint8 activations have zero points, and TensorRT's explicit
    quantization takes symmetric int8 only."""
    target = meta.extra.get("int8_target", "tensorrt")
    if meta.precision == "int8" and target != "tensorrt":
        raise BadInput(f"this int8 graph was quantized for {target} (--int8-target {target}: "
                       "uint8 activations with zero points, which TensorRT does not take); "
                       "export it again with --int8-target tensorrt, or run it with ONNX Runtime")


def profile_shapes(input_size: tuple[int, int] | list[int], max_batch: int,
                   opt_batch: int = 1) -> dict[str, tuple[int, int, int, int]]:
    """min/opt/max shapes of ``frames`` for the optimisation profile.

    ``opt_batch`` defaults to 1, the batch ``rtseg run`` sends: TensorRT picks its kernels for
    the optimum shape.

    >>> profile_shapes((360, 480), 8)["opt"]
    (1, 360, 480, 3)
    """
    if int(max_batch) < 1:
        raise BadInput(f"--max-batch must be at least 1, got {max_batch}")
    max_batch, opt = int(max_batch), int(opt_batch)
    if not 1 <= opt <= max_batch:
        raise BadInput(f"--opt-batch must be between 1 and --max-batch ({max_batch}), "
                       f"got {opt}")
    h, w = (int(v) for v in input_size)
    return {"min": (1, h, w, 3), "opt": (opt, h, w, 3), "max": (max_batch, h, w, 3)}


TensorInfo = tuple[str, tuple[int, ...], str]  # (name, shape with -1 for dynamic, dtype name)


def check_io_tensors(inputs: list[TensorInfo], outputs: list[TensorInfo],
                     input_size: tuple[int, int] | list[int]) -> None:
    """Raise BadInput unless the network has the contract's I/O.

    Contract: input ``frames`` uint8 [N, H, W, 3], output ``labels`` uint8 [N, H, W], N
    dynamic, (H, W) = the metadata ``input_size``.
    """
    h, w = (int(v) for v in input_size)
    problems = []
    for role, tensors, name, want in (("input", inputs, INPUT_NAME, (-1, h, w, 3)),
                                      ("output", outputs, OUTPUT_NAME, (-1, h, w))):
        found = {t[0]: t for t in tensors}
        if set(found) != {name}:
            problems.append(f"expected one {role} '{name}', the graph has "
                            f"{', '.join(found) or 'none'}")
            continue
        _, shape, dtype = found[name]
        if dtype != "uint8":
            problems.append(f"{role} '{name}' is {dtype}, expected uint8")
        if len(shape) != len(want):
            problems.append(f"{role} '{name}' has shape {list(shape)}, expected rank {len(want)}")
            continue
        if shape[0] != -1:
            problems.append(f"{role} '{name}' has a fixed batch of {shape[0]}; export it with a "
                            "dynamic batch dimension")
        if any(d not in (-1, e) for d, e in zip(shape[1:], want[1:])):
            problems.append(f"{role} '{name}' has shape {list(shape)}, expected "
                            f"{['N', *want[1:]]} (input_size {[h, w]} from the metadata)")
    if problems:
        raise BadInput("the ONNX graph does not follow the deploy contract: " + "; ".join(problems))


def format_parser_errors(onnx_path: str | Path, errors: list[str],
                         compat_problems: list[str] | None = None) -> str:
    """One message with every ONNX parser error in full, plus our pre-flight findings."""
    lines = [f"TensorRT could not parse {onnx_path} ({len(errors)} error(s)):"]
    lines += [f"  [{i}] {e}" for i, e in enumerate(errors)]
    if compat_problems:
        lines.append("Known TensorRT incompatibilities in this graph:")
        lines += [f"  - {p}" for p in compat_problems]
    return "\n".join(lines)


def read_onnx_metadata(onnx_path: str | Path) -> tuple[EngineMetadata, onnx.ModelProto]:
    """The rtseg metadata stored in an ONNX file's ``metadata_props``, and the model."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise BadInput(f"ONNX file not found: {onnx_path}")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends, not one base class
        raise BadInput(f"{onnx_path} is not a readable ONNX model: {e}") from None
    return EngineMetadata.from_onnx(model, source=str(onnx_path)), model
