"""``nn.Module`` holders of dropkit's functionals, one file per family, all deriving
from :class:`DropoutLayer`."""

from dropkit.layers.base import DropoutLayer
from dropkit.layers.concrete import ConcreteDropout, concrete_regularization
from dropkit.layers.dropblock import DropBlock2d, DropBlock3d, LinearScheduler, dropblock_schedule
from dropkit.layers.dropout import Dropout, Dropout1d, Dropout2d, Dropout3d
from dropkit.layers.droppath import DropPath, StochasticDepth
from dropkit.layers.noise import AlphaDropout, FeatureAlphaDropout, GaussianDropout
from dropkit.layers.recurrent import DropConnect, EmbeddingDropout, LockedDropout, WeightDrop
from dropkit.layers.residual import BiasDropoutAdd, ResidualDropPath

__all__ = ["Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "DropPath", "StochasticDepth"]
__all__ += [
    "DropBlock2d",
    "DropBlock3d",
    "LinearScheduler",
    "dropblock_schedule",
    "GaussianDropout",
    "AlphaDropout",
    "FeatureAlphaDropout",
    "LockedDropout",
    "EmbeddingDropout",
    "WeightDrop",
    "DropConnect",
    "ConcreteDropout",
    "concrete_regularization",
    "ResidualDropPath",
    "BiasDropoutAdd",
    "DropoutLayer",
]
