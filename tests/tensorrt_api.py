"""Checks of rtseg's TensorRT code against NVIDIA's API without a GPU (used by
``test_tensorrt_api.py``).

* ``type_check``: ``mypy`` over modules that import ``tensorrt``, against the TensorRT 10 type
  stubs (``tensorrt-stubs``, generated from NVIDIA's bindings). Only TensorRT is followed
  (every other import is ``Any``), so what it reports is TensorRT usage.
* ``tensorrt_names`` / ``missing_names``: every TensorRT name a module uses — ``trt.X.Y``
  chains, and methods and properties called on objects typed ``trt.Class`` (annotations, the
  return types of its own functions, ``trt.Class(...)`` constructors) — read from its source
  with ``ast``, looked up in a module such as the TensorRT 11 lean runtime's bindings.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUBS_PIN = "tensorrt-stubs==10.13.0.35.1"
STUBS_HINT = (f"pip install --no-deps {STUBS_PIN} (--no-deps: it depends on the tensorrt "
              "package, whose libraries download from pypi.nvidia.com)")

# tensorrt-stubs 10.13.0.35.1 has lines Python cannot parse (generated from pybind11
# signatures): parameters named ``in`` (plugin methods) and one parameter without a default
# after defaults. Renamed / defaulted in the copy mypy reads; nothing rtseg calls.
_STUB_REPAIRS = [
    (re.compile(r"([(,] *)in: "), r"\1in_: "),
    (re.compile(r"(power: Weights = None, channel_axis: int)\)"), r"\1 = ...)"),
]


def tensorrt_modules() -> list[Path]:
    """rtseg's modules that import ``tensorrt`` (anywhere in the file)."""
    found = []
    for path in sorted((REPO / "rtseg").rglob("*.py")):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.Import) and any(a.name == "tensorrt" for a in n.names)
               for n in ast.walk(tree)):
            found.append(path)
    return found


def stub_files() -> list[Path] | None:
    """The installed ``tensorrt-stubs`` .pyi files, or None when it is not installed."""
    try:
        dist = metadata.distribution("tensorrt-stubs")
    except metadata.PackageNotFoundError:
        return None
    return [Path(dist.locate_file(f)) for f in dist.files or () if str(f).endswith(".pyi")]


def prepare_stubs(target: Path) -> Path:
    """Copy the stubs to ``target`` (repaired so they parse) and return it, mypy's path."""
    files = stub_files()
    assert files, f"tensorrt-stubs is not installed: {STUBS_HINT}"
    for src in files:
        package = src.parent.name  # tensorrt/ or tensorrt_bindings/
        dest = target / package / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        text = src.read_text()
        for pattern, replacement in _STUB_REPAIRS:
            text = pattern.sub(replacement, text)
        ast.parse(text, str(src))  # a new stubs version with other faults: say where
        dest.write_text(text)
    return target


def mypy_config(stubs: Path, cache: Path) -> str:
    return f"""[mypy]
mypy_path = {stubs}
cache_dir = {cache}
follow_imports = skip
ignore_missing_imports = True
check_untyped_defs = True
[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]
follow_imports = normal
ignore_errors = True
"""


def type_check(paths: list[Path], stubs: Path, work: Path) -> tuple[int, str]:
    """``mypy`` over ``paths`` with the stubs in ``stubs`` (its cache beside them, its config
    in ``work``): (exit code, output)."""
    config = work / "mypy.ini"
    config.write_text(mypy_config(stubs, stubs.parent / "mypy_cache"))  # shared: faster
    if shutil.which("mypy") is None and not _has_module("mypy"):
        raise RuntimeError("mypy is not installed")
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config),
                           "--no-error-summary", "--show-error-codes",
                           *map(str, paths)], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    return done.returncode, (done.stdout + done.stderr).strip()


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# -- the names a module uses -------------------------------------------------------------------
def _aliases(tree: ast.AST) -> set[str]:
    return {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
            for a in n.names if a.name == "tensorrt"}


def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` → ["a", "b", "c"]; None for anything but names and attributes."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _class_of(annotation: ast.AST | None, aliases: set[str]) -> str | None:
    """``trt.ICudaEngine | None`` (or ``Optional[trt.X]``, ``"trt.X"``) → "ICudaEngine"."""
    if annotation is None:
        return None
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body
    for node in ast.walk(annotation):
        chain = _chain(node)
        if chain and len(chain) >= 2 and chain[0] in aliases:
            return ".".join(chain[1:])
    return None


def _type_of(value: ast.AST, types: dict[str, str], returns: dict[str, str],
             aliases: set[str]) -> str | None:
    """The TensorRT class (or enum) of an expression, where the source says it: a typed name
    or attribute, ``trt.X(...)``, a call of a function annotated to return ``trt.X``, or the
    chain ``trt.X.Y`` itself."""
    if isinstance(value, ast.Call):
        chain = _chain(value.func)
        if chain and chain[0] in aliases and len(chain) == 2:  # trt.Runtime(...)
            return chain[1]
        if chain and chain[-1] in returns and (len(chain) == 1 or chain[0] == "self"):
            return returns[chain[-1]]
        return None
    chain = _chain(value)
    if chain and chain[0] in aliases and len(chain) >= 2:  # severity = trt.ILogger.Severity
        return ".".join(chain[1:])
    return types.get(ast.unparse(value))


def tensorrt_names(source: str) -> set[tuple[str, ...]]:
    """Every TensorRT name ``source`` uses: ``("DataType", "UINT8")`` for ``trt.DataType.UINT8``,
    ``("IExecutionContext", "execute_async_v3")`` for a call on a context, and so on."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    returns: dict[str, str] = {}
    attributes: dict[str, str] = {}  # self.X annotated anywhere in the module
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef,
                                                             ast.AsyncFunctionDef))]
    for fn in functions:
        cls = _class_of(fn.returns, aliases)
        if cls:
            returns[fn.name] = cls
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute):
            cls = _class_of(node.annotation, aliases)
            if cls:
                attributes[ast.unparse(node.target)] = cls

    names: set[tuple[str, ...]] = set()
    for node in ast.walk(tree):  # trt.X.Y chains, anywhere
        chain = _chain(node) if isinstance(node, ast.Attribute) else None
        if chain and chain[0] in aliases:
            names.add(tuple(chain[1:]))
    for fn in functions:  # members of typed objects, one function at a time
        types = dict(attributes)
        for arg in fn.args.args + fn.args.kwonlyargs + fn.args.posonlyargs:
            cls = _class_of(arg.annotation, aliases)
            if cls:
                types[arg.arg] = cls
        body = [n for n in ast.walk(fn)]
        for node in body:  # in source order: ast.walk is breadth-first, good enough here
            if isinstance(node, ast.AnnAssign):
                cls = _class_of(node.annotation, aliases)
                if cls:
                    types[ast.unparse(node.target)] = cls
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                cls = _type_of(node.value, types, returns, aliases)
                if cls:
                    types[ast.unparse(node.targets[0])] = cls
        for node in body:
            if isinstance(node, ast.Attribute) and not (_chain(node) or [""])[0] in aliases:
                cls = _type_of(node.value, types, returns, aliases)
                if cls:
                    names.add((*cls.split("."), node.attr))
    return names


def missing_names(module, names: set[tuple[str, ...]]) -> list[str]:
    """The dotted names of ``names`` that ``module`` lacks, sorted."""
    missing = []
    for name in names:
        obj = module
        for part in name:
            if not hasattr(obj, part):
                missing.append(".".join(name))
                break
            obj = getattr(obj, part)
    return sorted(missing)
