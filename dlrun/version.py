"""The version of dlrun, kept apart so that the modules that record it import nothing else."""

__version__ = "0.1.0"
