"""`dlrun export`: a run's served model as an ONNX or TorchScript file.

What is written is the program MLflow serves for the run (the preprocessing fitted on
the training split, the net, then probabilities or the un-scaled values), read through
the same checks as `dlrun predict`. The file is made in a scratch folder beside the
target, loaded back and compared with the served program on random inputs of two batch
sizes, and only then moved to --output: a failed export leaves nothing there.
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dlrun.errors import DlrunError, unknown_name_message
from dlrun.lifecycle.stored import load_run

FORMATS = {
    "onnx": "ONNX, for onnxruntime and other runtimes (pip install 'dlrun[onnx]')",
    "torchscript": "TorchScript, for torch.jit.load and C++ libtorch",
}
# What the onnx format needs beyond dlrun's own dependencies: torch's exporter (onnx, onnxscript)
# and onnxruntime, which checks the written file against the served model.
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")
ATOL = RTOL = 1e-5  # float32 rounding: the runtimes order sums differently (regression values of ~100 differ by 1e-5)
CHECK_BATCHES = (1, 5)  # one row and several: an export that fixed the batch size fails the check
INPUT_NAME = "features"


class ExportFailed(DlrunError):
    """The run's model cannot be written in the chosen format, or not where --output says."""


class MissingExtra(DlrunError):
    """A package that the chosen format needs is not installed."""


@dataclass(frozen=True)
class Exported:
    """A written model file and what it takes and gives."""

    path: Path
    format: str
    run_id: str
    sample_shape: tuple[int, ...]
    output_name: str
    output_size: int

    def summary(self) -> str:
        shape = ", ".join(["batch", *map(str, self.sample_shape)])
        return (f"wrote the model of run {self.run_id} as {self.format} to {self.path}\n"
                f"  input '{INPUT_NAME}': float32 [{shape}] raw features; output '{self.output_name}': "
                f"[batch, {self.output_size}]")


def export_run(run_id: str, fmt: str, output: str, uri: str | None = None) -> Exported:
    """Write the served model of a run to `output` in the format `fmt`.

    Args:
        run_id: the MLflow run id printed by `dlrun train`.
        fmt: one of FORMATS (--format).
        output: the file to write; its folder is created.
        uri: the MLflow store (--tracking-uri); default as `dlrun train` chooses.

    Returns:
        What was written.

    Raises:
        ExportFailed: an unknown format, an --output that is a folder, or a model the format cannot hold
            (a text run's, whose tokenizer is Python).
        MissingExtra: the onnx format without the packages of dlrun's `onnx` extra.
        RunNotFound: an unknown run, or one that logged no model.
    """
    if fmt not in FORMATS:
        raise ExportFailed(unknown_name_message("export format", fmt, FORMATS, where="--format"))
    if fmt == "onnx":
        require_onnx()
    target = Path(output)
    if target.is_dir():
        raise ExportFailed(f"--output '{output}' is a folder; give the file to write, e.g. "
                           f"{target / ('model.onnx' if fmt == 'onnx' else 'model.pt')}.")
    stored = load_run(run_id, uri)
    served = stored.served_model()
    _refuse_text(served, run_id)
    module = _torch_module(served, run_id)
    sample_shape = tuple(int(n) for n in served.metadata.get_input_schema().inputs[0].shape[1:])
    info = stored.data_info()
    output_name = "probabilities" if info.get("task") == "classification" else "values"
    metadata = {"dlrun.run_id": run_id, "dlrun.task": str(info.get("task")),
                "dlrun.class_names": json.dumps(info.get("class_names") or []),
                "dlrun.input_shape": json.dumps(list(sample_shape))}
    write, load = (_write_onnx, _load_onnx) if fmt == "onnx" else (_write_torchscript, _load_torchscript)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as error:
        raise ExportFailed(f"cannot write to the folder of --output '{output}': {error.strerror or error}.") from None
    try:
        made = scratch / target.name
        try:
            write(module, sample_shape, output_name, metadata, made)
        except Exception as error:  # the converter's refusal: an operation or a shape it cannot express
            raise ExportFailed(f"the model of run {run_id} cannot be exported as {fmt}: {_reason(error)}. "
                               f"Try the other format ({', '.join(f for f in FORMATS if f != fmt)}), or serve "
                               "it through MLflow (dlrun predict, or mlflow models serve -m MODEL_URI "
                               "--env-manager local).") from None
        try:
            exported = load(made)
        except Exception as error:  # a file the runtime refuses: the exporter wrote something it cannot read
            raise ExportFailed(f"the {fmt} file made from run {run_id} does not load back: {_reason(error)}.") from None
        output_size = _check_outputs(module, exported, sample_shape, f"the {fmt} export of run {run_id}")
        for file in sorted(scratch.iterdir()):  # the model, and its weights file if the exporter wrote one
            os.replace(file, target.parent / file.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Exported(target, fmt, run_id, sample_shape, output_name, output_size)


def require_onnx() -> None:
    """MissingExtra unless the packages of the onnx extra import."""
    missing = []
    for name in ONNX_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtra(f"--format onnx needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                           "not installed. Install dlrun's onnx extra: pip install 'dlrun[onnx]' (or pip install "
                           f"{' '.join(ONNX_MODULES)}); or export with --format torchscript, which needs nothing more.")


def _refuse_text(served, run_id: str) -> None:
    """A text run's model tokenizes strings in Python before its network; an ONNX or TorchScript file would
    hold the network alone, on token ids that only dlrun's tokenizer makes."""
    from dlrun.serving.text_model import text_model_of

    if text_model_of(served) is not None:
        raise ExportFailed(f"the model of run {run_id} reads raw text: its tokenizer runs in Python before the "
                           "network, and an ONNX or TorchScript file holds the network only. Serve it through "
                           f"MLflow instead (dlrun predict {run_id} --input texts.csv, or `mlflow models serve -m "
                           "MODEL_URI --env-manager local`: the local environment, where dlrun is installed; "
                           "MLflow's default would install the dlrun of PyPI, another package), or take it into "
                           "Python with dlrun.load_model.")


def _torch_module(served, run_id: str):
    """The torch module behind the served model: a pyfunc's raw model, or the `model` of one rebuilt from
    a checkpoint (a sweep's trial that logged none)."""
    import torch

    module = served.get_raw_model() if hasattr(served, "get_raw_model") else getattr(served, "model", None)
    if not isinstance(module, torch.nn.Module):
        raise ExportFailed(f"the served model of run {run_id} is a {type(module).__name__}, not a torch module; "
                           "dlrun exports torch models only.")
    return module


def _example(sample_shape: tuple[int, ...], batch: int, seed: int = 0):
    import torch

    return torch.randn((batch, *sample_shape), generator=torch.Generator().manual_seed(seed))


def _write_onnx(module, sample_shape, output_name: str, metadata: dict[str, str], path: Path) -> None:
    """torch's dynamo exporter (the default since torch 2.9; the TorchScript-based one cannot trace the
    torch.export program that MLflow serves), with a dynamic batch dimension."""
    import torch

    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # it warns of torchvision operators it skips
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, (_example(sample_shape, 2),), dynamo=True, verbose=False, report=False,
                input_names=[INPUT_NAME], output_names=[output_name],
                dynamic_shapes=({0: torch.export.Dim("batch")},))
    finally:
        exporter_log.setLevel(level)
    program.model.metadata_props.update(metadata)
    program.save(str(path))  # one file; the weights go to PATH.data only past protobuf's 2 GB


def _load_onnx(path: Path) -> Callable:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {INPUT_NAME: x.numpy()})[0]


def _write_torchscript(module, sample_shape, output_name: str, metadata: dict[str, str], path: Path) -> None:
    """torch.jit.script of the served program, so that the batch size stays free (tracing would fix it)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream, and says so on every call
        if not isinstance(module, torch.fx.GraphModule):  # a module rebuilt from a checkpoint: as MLflow logs it
            module = torch.export.export(module, (_example(sample_shape, 2),),
                                         dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
        scripted = torch.jit.script(_scriptable(module))
        torch.jit.save(scripted, str(path), _extra_files={"dlrun.json": json.dumps(metadata)})


def _scriptable(module):
    """The served torch.export program as a GraphModule that TorchScript can compile.

    TorchScript cannot compile three things in it: the pytree flattening of the inputs (a plain
    `forward(x)` is generated instead), the input-shape guards (dropped; a wrong shape still fails
    in the first layer), and operator overloads (`aten.linear.default` becomes `aten.linear`, which
    TorchScript resolves by signature; `aten.sym_size.int`, the batch size, becomes `aten.size`).
    """
    import torch

    graph = copy.deepcopy(module.graph)
    graph._codegen = torch.fx.graph.CodeGen()
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            graph.erase_node(node)
        elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            packet = node.target.overloadpacket
            node.target = torch.ops.aten.size if packet is torch.ops.aten.sym_size else packet
        elif node.op == "output" and isinstance(node.args[0], (tuple, list)) and len(node.args[0]) == 1:
            node.args = (node.args[0][0],)  # one tensor out, as the served model gives it
    graph.lint()
    return torch.fx.GraphModule(module, graph)


def _load_torchscript(path: Path) -> Callable:
    import torch

    loaded = torch.jit.load(str(path), map_location="cpu")
    return lambda x: loaded(x).detach().numpy()


def _check_outputs(module, exported: Callable, sample_shape, what: str) -> int:
    """ExportFailed unless the exported model gives the served model's outputs (within ATOL + RTOL * |value|)
    on random rows; the output size."""
    import numpy as np
    import torch

    for seed, batch in enumerate(CHECK_BATCHES, start=1):
        rows = _example(sample_shape, batch, seed)
        with torch.no_grad():
            expected = module(rows).numpy()
        try:
            got = np.asarray(exported(rows))
        except Exception as error:
            raise ExportFailed(f"{what} does not run on {batch} row(s): {_reason(error)}.") from None
        if got.shape != expected.shape or not np.allclose(got, expected, atol=ATOL, rtol=RTOL):
            gap = float(np.abs(got - expected).max()) if got.shape == expected.shape else f"shape {got.shape}"
            raise ExportFailed(f"{what} does not compute what the served model does on {batch} row(s) "
                               f"(largest difference {gap}; allowed {ATOL} + {RTOL} of the value); nothing was written.")
    return int(expected.shape[-1])


def _reason(error: BaseException) -> str:
    """The first line of the innermost cause of an error (the exporter wraps the operator it has no
    translation for in two more errors), without terminal colours, shortened."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:300].rstrip('.')}" if lines else type(error).__name__
