"""A dlrun plugin for bench/stream.py: the training epoch's clock, read from Lightning's public hooks.

    dlrun train --plugin bench/stream_clock.py ... 'callbacks=[{name: stream_clock, path: clock.json}]'

It writes one JSON object at the end of training: per epoch `train_s` (the epoch's start to its last
optimizer step), `epoch_s` (to the end of training's hooks: validation and checkpoints included, as
bench/loops.py measures an epoch), and the images of the training and validation batches.
"""

from __future__ import annotations

import json
import time

from dlrun import plugins


@plugins.callback("stream_clock", "bench/stream.py: time the training epochs and count their images")
def stream_clock(path: str):
    import pytorch_lightning as pl

    class StreamClock(pl.Callback):
        def __init__(self):
            self.epochs: list[dict] = []

        def on_train_epoch_start(self, trainer, module):
            self.epochs.append({"start": time.perf_counter(), "train_images": 0, "val_images": 0})

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            epoch = self.epochs[-1]
            epoch["train_images"] += len(batch[0])
            epoch["train_end"] = time.perf_counter()

        def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
            if self.epochs and not trainer.sanity_checking:
                self.epochs[-1]["val_images"] += len(batch[0])

        def on_train_end(self, trainer, module):
            end = time.perf_counter()
            following = [e["start"] for e in self.epochs[1:]] + [end]
            measured = [{"train_s": e["train_end"] - e["start"], "epoch_s": f - e["start"],
                         "train_images": e["train_images"], "val_images": e["val_images"]}
                        for e, f in zip(self.epochs, following)]
            with open(path, "w") as out:
                json.dump({"epochs": measured}, out)

    return StreamClock()
