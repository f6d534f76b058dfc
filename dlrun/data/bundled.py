"""scikit-learn's bundled data sets: shipped inside scikit-learn, nothing downloads."""

from __future__ import annotations

import numpy as np

from dlrun.data.raw import DATASETS, RawData


def _from_sklearn(loader_name: str, task: str) -> RawData:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader_name)()
    x = np.asarray(bunch.data, dtype=np.float32)
    if task == "classification":
        y = np.asarray(bunch.target, dtype=np.int64)
        names = [str(n) for n in getattr(bunch, "target_names", sorted(set(y.tolist())))]
    else:
        y = np.asarray(bunch.target, dtype=np.float32).reshape(len(x), -1)
        names = []
    features = [str(f) for f in getattr(bunch, "feature_names", [])]
    return RawData(x, y, task, (x.shape[1],), names, features)


@DATASETS.register("digits", "scikit-learn's 8x8 handwritten digits: 1,797 images, 10 classes")
def digits() -> RawData:
    data = _from_sklearn("load_digits", "classification")
    data.sample_shape, data.image = (1, 8, 8), True
    return data


@DATASETS.register("iris", "Iris flowers: 150 samples, 4 features, 3 classes")
def iris() -> RawData:
    return _from_sklearn("load_iris", "classification")


@DATASETS.register("wine", "Wine cultivars: 178 samples, 13 features, 3 classes")
def wine() -> RawData:
    return _from_sklearn("load_wine", "classification")


@DATASETS.register("breast_cancer", "Breast cancer diagnosis: 569 samples, 30 features, 2 classes")
def breast_cancer() -> RawData:
    return _from_sklearn("load_breast_cancer", "classification")


@DATASETS.register("diabetes", "Diabetes progression: 442 samples, 10 features, regression")
def diabetes() -> RawData:
    return _from_sklearn("load_diabetes", "regression")
