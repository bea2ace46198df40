"""dropkit: the dropout family of regularizers for PyTorch.

The public API, re-exported from :mod:`dropkit.functional` (the math) and
:mod:`dropkit.layers` (the ``nn.Module`` holders).
"""

from dropkit import bn, mc
from dropkit.convert import convert, revert
from dropkit.engine.keyed import mask_keys
from dropkit.functional import (
    alpha_dropout,
    bias_dropout_add,
    concrete_dropout,
    drop_block2d,
    drop_block3d,
    drop_path,
    drop_path_rates,
    dropblock2d,
    dropblock3d,
    dropout,
    dropout1d,
    dropout2d,
    dropout3d,
    embedding_dropout,
    feature_alpha_dropout,
    gaussian_dropout,
    locked_dropout,
    residual_drop_path,
    stochastic_depth,
)
from dropkit.layers import (
    AlphaDropout,
    BiasDropoutAdd,
    ConcreteDropout,
    DropBlock2d,
    DropBlock3d,
    DropConnect,
    Dropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    DropoutLayer,
    DropPath,
    EmbeddingDropout,
    FeatureAlphaDropout,
    GaussianDropout,
    LinearScheduler,
    LockedDropout,
    ResidualDropPath,
    StochasticDepth,
    WeightDrop,
    concrete_regularization,
    dropblock_schedule,
)
from dropkit.schedule import DropoutSchedule

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
__all__ += [
    "mc",
    "convert",
    "revert",
    "dropblock2d",
    "dropblock3d",
    "stochastic_depth",
    "drop_block2d",
    "drop_block3d",
    "gaussian_dropout",
    "alpha_dropout",
    "feature_alpha_dropout",
    "locked_dropout",
    "embedding_dropout",
    "concrete_dropout",
    "DropBlock2d",
    "DropBlock3d",
    "dropblock_schedule",
    "LinearScheduler",
    "GaussianDropout",
    "AlphaDropout",
    "FeatureAlphaDropout",
    "LockedDropout",
    "EmbeddingDropout",
    "WeightDrop",
    "DropConnect",
    "ConcreteDropout",
    "concrete_regularization",
    "DropoutSchedule",
]
__all__ += ["residual_drop_path", "ResidualDropPath", "bias_dropout_add", "BiasDropoutAdd"]
__all__ += ["mask_keys", "DropoutLayer"]
