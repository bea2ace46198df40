"""``nn.Module`` holders of dropkit's functionals, one file per family."""

from dropkit.layers.dropout import Dropout, Dropout1d, Dropout2d, Dropout3d
from dropkit.layers.droppath import DropPath, StochasticDepth

__all__ = ["Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "DropPath", "StochasticDepth"]
