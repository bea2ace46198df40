"""The math of dropkit: pure functions over tensors.

Every ``nn.Module`` in :mod:`dropkit.layers` is a thin holder of configuration
whose ``forward`` calls one function from this package, which has one module
per family as ``layers`` has. Element-wise masks come from the mask engine
(:mod:`dropkit.engine`): a counter-based Philox generator, so a mask is a pure
function of ``(seed, offset)`` and backward regenerates it
instead of keeping it alive (see ``docs/mask-spec.md``).

Conventions shared by all functions here:

* ``p`` is the **drop** probability, a real number in ``[0, 1]``.
* ``training=False`` and ``p=0`` return the input itself (no RNG draw).
* ``p=1`` gives zeros and zero gradients, never NaN.
* Without ``seed=``, each call takes one seed from torch's default generator,
  so ``torch.manual_seed`` makes every result reproducible and consecutive
  calls draw different masks.
"""


from dropkit.functional._checks import (  # noqa: F401  (shared by the layers)
    _check_block_size,
    _check_input,
    _check_mode,
    _check_p,
    _check_seed,
    _check_spatial_rank,
    _keep_scale,
)
from dropkit.functional.concrete import concrete_dropout, concrete_dropout_regularizer
from dropkit.functional.dropblock import (
    drop_block2d,
    drop_block3d,
    dropblock2d,
    dropblock3d,
    dropblock_gamma,
)
from dropkit.functional.dropout import (
    InputShapeError,
    dropout,
    dropout1d,
    dropout2d,
    dropout3d,
)
from dropkit.functional.droppath import drop_path, drop_path_rates, stochastic_depth
from dropkit.functional.fused import bias_dropout_add, residual_drop_path
from dropkit.functional.noise import (
    SELU_ALPHA_PRIME,
    alpha_dropout,
    feature_alpha_dropout,
    gaussian_dropout,
)
from dropkit.functional.recurrent import embedding_dropout, locked_dropout

__all__ = [
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "drop_path",
    "drop_path_rates",
    "dropblock2d",
    "dropblock3d",
    "dropblock_gamma",
    "stochastic_depth",
    "drop_block2d",
    "drop_block3d",
    "gaussian_dropout",
    "alpha_dropout",
    "feature_alpha_dropout",
    "InputShapeError",
    "locked_dropout",
    "embedding_dropout",
    "concrete_dropout",
    "concrete_dropout_regularizer",
    "SELU_ALPHA_PRIME",
    "bias_dropout_add",
    "residual_drop_path",
]
