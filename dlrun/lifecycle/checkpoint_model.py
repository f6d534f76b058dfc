"""The served model of a run that logged none on purpose (a sweep's trial other than the best so far),
rebuilt from the run's config and best.ckpt, with the same interface predict and eval use.

The preprocessing is fitted again on the run's seeded training split, as it was in training, so the
rebuilt model gives what the logged one would have given.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


class CheckpointModel:
    """ServingModel(preprocess, net from best.ckpt, postprocess) behind `predict` and `metadata`, as an
    MLflow pyfunc model offers them."""

    def __init__(self, stored):
        """Args:
        stored: the StoredRun, whose config and best checkpoint rebuild the model.
        """
        import torch
        from mlflow.types import Schema, TensorSpec

        from dlrun.models.modules import ServingModel
        from dlrun.training.setup import prepare

        prepared = prepare(stored.run_config())
        recorded = stored.run.data.tags.get("dlrun.data_fingerprint")
        if recorded and recorded != prepared.data.fingerprint:  # its preprocessing is fitted on this data again
            from dlrun.errors import DataError

            raise DataError(f"run {stored.run_id} logged no model, so it is rebuilt from its checkpoint and its "
                            "data; that data has changed since it trained (data fingerprint "
                            f"{recorded[:12]}... then, {prepared.data.fingerprint[:12]}... now). Restore the data "
                            "the run trained on, or train a run that logs its model (sweep files: models: all).")
        checkpoint = torch.load(stored.checkpoint("best"), map_location="cpu", weights_only=True)
        prepared.module.load_state_dict(checkpoint["state_dict"])
        data = prepared.data
        self.model = ServingModel(data.preprocess, prepared.module.net.cpu(), data.postprocess).eval()
        features = TensorSpec(np.dtype(np.float32), (-1, *data.raw_example.shape[1:]))
        self.reads_text = data.tokenizer is not None
        if self.reads_text:  # a text run: raw strings in, as its logged model takes
            from mlflow.types import ColSpec

            from dlrun.serving.text_model import TextModel, TextServing

            self.model = TextModel(self.model, TextServing.of(data)).eval()
            features = ColSpec("string")
        self.metadata = SimpleNamespace(get_input_schema=lambda: Schema([features]))

    def predict(self, features) -> np.ndarray:
        """Probabilities or values for rows of raw features (a text run: raw texts), as the logged model
        returns them."""
        import torch

        if self.reads_text:
            return self.model.predict(features)
        with torch.no_grad():
            return self.model(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy()
