"""rtseg's TensorRT code against NVIDIA's API, on any machine (no GPU, no TensorRT builder):

* the TensorRT modules type-check with ``mypy`` against the TensorRT 10.13 stubs
  (``tensorrt-stubs``): builder and runtime calls, argument and return types;
* every TensorRT name the backend uses at run time (classes, methods, properties, enum
  members: read from its source) exists in the TensorRT 11 lean runtime's compiled bindings
  (``tensorrt-lean-cu13-bindings``);
* a misspelt call in a copy of the backend fails both checks, so they can fail.

Each skips, saying what to install, where its packages are missing (``pip install -e
".[dev]"`` brings mypy and the lean runtime; the stubs need ``--no-deps``, see
``tensorrt_api.STUBS_HINT``).
"""

from __future__ import annotations

import sys

import pytest

import tensorrt_api
from tensorrt_api import (REPO, STUBS_HINT, missing_names, prepare_stubs, tensorrt_modules,
                          tensorrt_names, type_check)

BACKEND = REPO / "rtseg" / "backends" / "tensorrt_backend.py"
BUILDER = REPO / "rtseg" / "deploy" / "engine_build.py"
# The calls the backend cannot run without: if the name reader stops seeing these, it is
# broken, not the backend.
CORE_RUNTIME_NAMES = {("Runtime", "deserialize_cuda_engine"),
                      ("ICudaEngine", "create_execution_context"),
                      ("ICudaEngine", "get_tensor_profile_shape"),
                      ("IExecutionContext", "set_input_shape"),
                      ("IExecutionContext", "set_tensor_address"),
                      ("IExecutionContext", "execute_async_v3"),
                      ("TensorIOMode", "INPUT"), ("DataType", "UINT8"),
                      ("ILogger", "Severity", "ERROR")}


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[dev]')")
    if tensorrt_api.stub_files() is None:
        pytest.skip(f"tensorrt-stubs is not installed: {STUBS_HINT}")
    return prepare_stubs(tmp_path_factory.mktemp("tensorrt_stubs"))


@pytest.fixture(scope="module")
def lean():
    """NVIDIA's TensorRT 11 lean runtime bindings (compiled; importable without a GPU)."""
    return pytest.importorskip(
        "tensorrt_lean_bindings",
        reason="the TensorRT lean runtime is not installed (pip install -e '.[dev]', or "
               "pip install tensorrt-lean-cu13-bindings tensorrt-lean-cu13-libs)")


def misspelt_backend(tmp_path):
    """A copy of the backend calling ``execute_async_v4``, which TensorRT does not have."""
    source = BACKEND.read_text()
    assert source.count("execute_async_v3(") == 1
    copy = tmp_path / "tensorrt_backend.py"
    copy.write_text(source.replace("execute_async_v3(", "execute_async_v4("))
    return copy


def test_the_tensorrt_modules_are_found_by_their_import():
    assert {BACKEND, BUILDER} <= set(tensorrt_modules())


def test_the_tensorrt_modules_type_check_against_nvidias_stubs(stubs, tmp_path):
    code, output = type_check(tensorrt_modules(), stubs, tmp_path)
    assert code == 0, output


def test_every_runtime_name_of_the_backend_exists_in_the_tensorrt_11_runtime(lean):
    names = tensorrt_names(BACKEND.read_text())
    assert CORE_RUNTIME_NAMES <= names, CORE_RUNTIME_NAMES - names
    assert missing_names(lean, names) == [], f"TensorRT {lean.__version__} lacks these"


def test_a_misspelt_call_fails_both_checks(stubs, lean, tmp_path):
    copy = misspelt_backend(tmp_path)
    code, output = type_check([copy], stubs, tmp_path)
    print(output)
    assert code == 1
    assert '"IExecutionContext" has no attribute "execute_async_v4"' in output
    missing = missing_names(lean, tensorrt_names(copy.read_text()))
    print("missing in the TensorRT 11 lean runtime:", missing)
    assert missing == ["IExecutionContext.execute_async_v4"]


def test_the_logger_routes_messages_of_nvidias_ilogger(lean, monkeypatch):
    """rtseg's logger subclasses the compiled ``trt.ILogger``; its severity checks work with
    NVIDIA's enum (no Runtime is made: that needs a GPU)."""
    from rtseg.backends import tensorrt_backend
    from rtseg.backends.tensorrt_backend import trt_logger, trt_messages

    monkeypatch.setitem(sys.modules, "tensorrt", lean)
    monkeypatch.setattr(tensorrt_backend, "_LOGGER", None)
    severity = lean.ILogger.Severity
    seen: list[str] = []
    with trt_messages(seen.append) as messages:
        logger = trt_logger()
        assert isinstance(logger, lean.ILogger)
        logger.log(severity.WARNING, "slow tactic")
        logger.log(severity.INFO, "chatter")
        logger.log(severity.ERROR, "bad plan")
    assert seen == ["TensorRT warning: slow tactic", "TensorRT error: bad plan"]
    assert messages.errors == ["bad plan"]


def test_type_stubs_alone_are_not_taken_for_tensorrt(monkeypatch):
    """tensorrt-stubs installs ``tensorrt/__init__.pyi`` only, so ``import tensorrt`` gives an
    empty namespace package: rtseg must still say that TensorRT is not installed."""
    from rtseg.backends.tensorrt_backend import import_tensorrt
    from rtseg.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "tensorrt", type(sys)("tensorrt"))  # what the stubs give
    with pytest.raises(MissingDependency, match="only its type stubs"):
        import_tensorrt()
