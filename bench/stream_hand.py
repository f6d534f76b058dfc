"""The hand-written peer of bench/stream.py: a torch DataLoader over the PNG files, decoded with PIL.

    python -m bench.stream_hand --folder IMAGES --workers 1 --batch-size 64 --threads 1 --model "model=cnn model.width=8"

What a user writes without dlrun: the files listed class folder by class folder, a seeded split of
the same sizes as dlrun's (15% validation, 15% test), a Dataset whose __getitem__ opens one file
with PIL, a shuffled DataLoader with the same workers and batch size, and one epoch of training and
validation of the same model (built from the same config by dlrun's model builder), Adam with the
config's options. Prints one JSON line: the epoch as bench/stream_clock.py measures dlrun's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class PngFiles(Dataset):
    def __init__(self, files: list[tuple[Path, int]]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path, label = self.files[index]
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        return torch.from_numpy((pixels.transpose(2, 0, 1) - 127.5) / 64.0), label


def listed(folder: Path) -> list[tuple[Path, int]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    return [(file, label) for label, d in enumerate(classes) for file in sorted(d.glob("*.png"))]


def build(model_overrides: list[str], classes: int, sample_shape: tuple[int, ...]):
    from dlrun.config.compose import compose
    from dlrun.config.validate import validate
    from dlrun.models.build import build_model

    run = validate(compose(model_overrides))
    net = build_model(run.config["model"]["layers"], sample_shape, classes, run.activation,
                      run.regularization["dropout"])
    name, options = run.optim
    assert name == "adam", "the hand-written loop uses Adam, as the benchmark's config does"
    return net, torch.optim.Adam(net.parameters(), lr=options["lr"], betas=tuple(options["betas"]), eps=options["eps"],
                                 weight_decay=options["weight_decay"], amsgrad=options["amsgrad"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="model=cnn", help="the overrides that choose the model and optimizer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    files = listed(args.folder)
    order = np.random.default_rng(args.seed).permutation(len(files))
    held = round(0.15 * len(files))
    train, val = [files[i] for i in order[2 * held:]], [files[i] for i in order[:held]]
    classes = len({label for _, label in files})
    with Image.open(files[0][0]) as first:
        sample_shape = (3, first.height, first.width)
    net, optimizer = build(args.model.split(), classes, sample_shape)
    loss_fn = torch.nn.CrossEntropyLoss()
    loaders = {name: DataLoader(PngFiles(split), batch_size=args.batch_size, shuffle=name == "train",
                                num_workers=args.workers, generator=torch.Generator().manual_seed(args.seed))
               for name, split in (("train", train), ("val", val))}

    start = time.perf_counter()
    net.train()
    for x, y in loaders["train"]:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        optimizer.step()
    train_end = time.perf_counter()
    net.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loaders["val"]:
            correct += int((net(x).argmax(1) == y).sum())
    end = time.perf_counter()
    result = {"epochs": [{"train_s": train_end - start, "epoch_s": end - start, "train_images": len(train),
                          "val_images": len(val)}], "val_acc": correct / len(val)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
