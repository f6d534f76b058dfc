"""dlrun: a declarative command-line experiment runner for deep learning."""

__version__ = "0.1.0"
