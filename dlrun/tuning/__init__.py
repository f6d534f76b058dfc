"""Sweeps: grids (dlrun train -m) and Optuna studies (dlrun sweep)."""
