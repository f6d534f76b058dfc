"""A torch.export program (.pt2) checked, before torch loads it, to hold data that runs no code.

torch.export.load unpickles parts of an archive: sample inputs that do not load with weights_only=True
(it falls back to weights_only=False), weights and constants marked `use_pickle`, custom and opaque
objects; it dlopens AOTInductor libraries, reads an older zip layout through pickle, and hands every
symbolic expression of the graph to sympy.sympify, which evaluates Python. A graph node may also name
any callable reachable from `torch.` (torch.os.system). A program dlrun writes has none of these, so
an archive is accepted only when every member is one of the plain records torch.export.save writes,
every payload is raw tensor bytes, every expression is sympy's printed form of numbers and symbols,
and every node calls an operator.
"""

from __future__ import annotations

import ast
import io
import json
import math
import operator
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator

from dlrun.errors import ConfigError

# The members torch.export.save writes, below the archive's one top-level folder.
_MEMBERS = re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                      r"|models/\w+\.json|data/weights/\w+_weights_config\.json|data/weights/weight_\d+"
                      r"|data/constants/\w+_constants_config\.json|data/constants/tensor_\d+"
                      r"|data/sample_inputs/\w+\.pt|extra/[^/]+")
_RAW_PAYLOAD = {"weights": re.compile(r"weight_\d+"), "constants": re.compile(r"tensor_\d+")}
# What sympy's printed expressions call (srepr) and torch's own sympy functions.
_SYMPY_CALLS = frozenset({
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "Eq", "Ne",
    "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality",
    "Unequality", "And", "Or", "Not", "floor", "ceiling", "sqrt", "FloorDiv", "ModularIndexing", "Where",
    "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural",
    "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat",
    "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "BitwiseFn_bitwise_and",
    "BitwiseFn_bitwise_or", "OpaqueUnaryFn_log2", "OpaqueUnaryFn_sqrt", "OpaqueUnaryFn_exp"})
_SYMPY_NAMES = frozenset({"true", "false", "oo", "zoo", "nan", "S", "pi", "E"})
_SYMBOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXPRESSION_NODES = (ast.Expression, ast.Call, ast.Name, ast.Load, ast.Constant, ast.keyword, ast.BinOp,
                     ast.UnaryOp, ast.Compare, ast.BoolOp, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)


def refuse_pickled_program(path: Path | str, owner: str) -> None:
    """A ConfigError unless the .pt2 archive at path loads without running code of its own.

    Args:
        path: the program (a text model's model.pt2, or an MLflow pytorch model's data/model.pt2).
        owner: what the program belongs to, for the message ("the model m-... of run ...").

    Raises:
        ConfigError: the archive holds a pickled or compiled payload, an expression or operator that is
            not plain, or is not a zip archive torch.export.save wrote.
    """
    problem = _first_problem(Path(path))
    if problem:
        raise ConfigError(f"the program {Path(path).name} of {owner} is refused: {problem}. dlrun loads only "
                          "programs whose weights, inputs and graph are plain data, as torch.export.save "
                          "writes them for dlrun's models; the file was altered or not written by dlrun.")


def _first_problem(path: Path) -> str | None:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        return f"it is not a zip archive ({error})"
    with archive:
        names = archive.namelist()
        if len(set(names)) != len(names):  # two records of one name: torch and this check could read different ones
            return "it holds two records of the same name"
        roots = {name.split("/", 1)[0] for name in names}
        if len(roots) != 1 or any("/" not in name for name in names):
            return "its records do not share the one top-level folder of a torch.export archive"
        root = roots.pop() + "/"
        for name in names:
            problem = _record_problem(archive, name, name[len(root):])
            if problem:
                return problem
    return None


def _record_problem(archive: zipfile.ZipFile, name: str, member: str) -> str | None:
    if not _MEMBERS.fullmatch(member):
        return f"it holds the record '{member}', which is not part of a plain torch.export program"
    if member.startswith("data/sample_inputs/"):
        import torch

        try:
            torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
        except Exception as error:  # torch would unpickle it with weights_only=False
            lines = str(error).strip().splitlines() or [type(error).__name__]
            reason = next((line.strip() for line in lines if "GLOBAL" in line), lines[0][:160]).rstrip(".")
            return f"'{member}' does not load as tensors only ({reason})"
        return None
    if member.endswith("_config.json"):
        return _payload_problem(member, _read_json(archive, name))
    if member.startswith("models/"):
        return _graph_problem(member, _read_json(archive, name))
    return None


def _read_json(archive: zipfile.ZipFile, name: str) -> Any:
    try:
        return json.loads(archive.read(name).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _payload_problem(member: str, config: Any) -> str | None:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        return f"'{member}' is not a payload config"
    kind = member.split("/")[1]
    for key, entry in entries.items():
        if not isinstance(entry, dict) or entry.get("use_pickle") is not False:
            return f"'{member}' marks '{key}' as pickled (use_pickle)"
        if not _RAW_PAYLOAD[kind].fullmatch(str(entry.get("path_name"))):
            return f"'{member}' stores '{key}' as {entry.get('path_name')!r}, not as raw tensor bytes"
    return None


def _graph_problem(member: str, program: Any) -> str | None:
    if not isinstance(program, dict):
        return f"'{member}' is not a serialized program"
    for key, value in _walk(program):
        if key == "expr_str" and not _plain_expression(value):
            return f"'{member}' holds the expression {str(value)[:120]!r}, which is not a plain sympy expression"
        if key in ("target", "as_operator") and not _plain_operator(value):
            return f"'{member}' calls {str(value)[:120]!r}, which is not a torch operator"
        if key in ("as_custom_obj", "custom_obj_values") and value:
            return f"'{member}' uses a custom object"
    return None


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in nested JSON. A node's target is a string under "target"; a node's
    metadata (strings only, never called) sits under "metadata" and is skipped."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                if key == "metadata":
                    continue
                yield key, value
                stack.append(value)
        elif isinstance(current, list):
            stack.extend(current)


def _plain_expression(text: Any) -> bool:
    """Whether sympify(text) can only build numbers, symbols and sympy functions: a Python expression of
    calls to known sympy names, symbol names, numbers and operators, with no attribute or subscript."""
    if not isinstance(text, str):
        return False
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if not isinstance(node, _EXPRESSION_NODES):
            return False
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS):
            return False
        if isinstance(node, ast.Name) and not (node.id in _SYMPY_CALLS or node.id in _SYMPY_NAMES
                                               or re.fullmatch(r"[a-z]+\d+", node.id)):
            return False
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and not _SYMBOL_NAME.fullmatch(node.value):
            return False
    return True


def _plain_operator(target: Any) -> bool:
    """Whether a node's target resolves, as torch's deserializer resolves it, to a torch operator or one
    of the integer and comparison functions symbolic shapes use (never any callable under `torch.`)."""
    import torch
    from torch._export.serde import serialize

    if not isinstance(target, str):
        return False
    head, _, rest = target.partition(".")
    module = {"_operator": operator, "torch": torch, "math": math}.get(head)
    if module is None or not rest:
        return False
    resolved: Any = module
    for name in rest.split("."):
        if name.startswith("__") or not hasattr(resolved, name):
            return False
        resolved = getattr(resolved, name)
    if isinstance(resolved, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
        return True
    return resolved is operator.getitem or resolved in getattr(serialize, "_SYM_OPS", set())
