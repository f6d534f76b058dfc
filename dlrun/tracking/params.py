"""Flatten a resolved config into MLflow params: one per leaf, under its dotted path."""

from __future__ import annotations

from typing import Any

# MLflow rejects longer param values.
MAX_VALUE_LENGTH = 6000


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """{'optim': {'lr': 0.1}} -> {'optim.lr': '0.1'}; list items are indexed by position."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
        items = enumerate(node)
    else:
        return {prefix: str(node)[:MAX_VALUE_LENGTH]} if prefix else {}
    flat: dict[str, str] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def run_params(config: dict, choices: dict[str, str]) -> dict[str, str]:
    """Every leaf of the config, plus each group's chosen option under the group's name."""
    params = flatten(config)
    params.update(choices)
    return params
