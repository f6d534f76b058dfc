"""The sweep's peer: a hand-written Optuna study of the same small trials, as a user would write it.

    python -m bench.optuna_peer --store sqlite:///peer.db --trials 20 --epochs 3

Iris, standardized on a stratified training split; the MLP of conf/model/mlp.yaml (two hidden layers
of `width`, ReLU); Adam at `lr`; batches of 16; TPE (seed 0) over the same space as bench/speed.py's
sweep (lr log-uniform in [1e-3, 1e-1], width in 16, 32, 64). Each trial trains in a plain PyTorch loop
and logs its params and final metrics to MLflow, one run per trial (the fair peer: it tracks too).
bench/speed.py times the whole process, imports included, as it times `dlrun sweep`.
"""

from __future__ import annotations

import argparse
import json
import time

import mlflow
import optuna
import torch
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split
from torch import nn


def iris_splits(seed: int = 42):
    """Train and validation tensors: 60/20 of the rows, stratified, standardized on the training rows."""
    x, y = load_iris(return_X_y=True)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
    x_val, _, y_val, _ = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)

    def tensors(features, labels):
        return torch.tensor((features - mean) / std, dtype=torch.float32), torch.tensor(labels)

    return tensors(x_train, y_train), tensors(x_val, y_val)


def objective_for(train, val, epochs: int, batch: int = 16):
    (x_train, y_train), (x_val, y_val) = train, val

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("optim.lr", 1e-3, 1e-1, log=True)
        width = trial.suggest_categorical("model.width", [16, 32, 64])
        torch.manual_seed(trial.number)
        net = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3))
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(epochs):
            net.train()
            order = torch.randperm(len(x_train))
            for start in range(0, len(x_train), batch):
                index = order[start:start + batch]
                loss = loss_fn(net(x_train[index]), y_train[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            net.eval()
            with torch.no_grad():
                outputs = net(x_val)
                val_loss = float(loss_fn(outputs, y_val))
                val_acc = float((outputs.argmax(dim=-1) == y_val).float().mean())
        with mlflow.start_run(run_name=f"trial-{trial.number}"):
            mlflow.log_params({"optim.lr": lr, "model.width": width})
            mlflow.log_metrics({"val/loss": val_loss, "val/acc": val_acc})
        return val_acc

    return objective


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="the MLflow tracking URI")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mlflow.set_tracking_uri(args.store)
    mlflow.set_experiment("optuna-peer")
    train, val = iris_splits()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective_for(train, val, args.epochs), n_trials=args.trials)
    print(json.dumps({"trials": len(study.trials), "best_value": study.best_value,
                      "in_process_s": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
