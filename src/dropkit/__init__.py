"""dropkit: the dropout family of regularizers for PyTorch.

The public API, re-exported from :mod:`dropkit.functional` (the math) and
:mod:`dropkit.layers` (the ``nn.Module`` holders).
"""

from dropkit import bn
from dropkit.functional import (
    drop_path,
    drop_path_rates,
    dropout,
    dropout1d,
    dropout2d,
    dropout3d,
)
from dropkit.layers import (
    Dropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    DropPath,
    StochasticDepth,
)

__version__ = "0.1.0"

__all__ = [
    "bn",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "drop_path",
    "drop_path_rates",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "DropPath",
    "StochasticDepth",
]
