r"""BatchNorm companions: the variance-shift diagnostic and statistics recalibration.

Dropout placed *before* a BatchNorm layer changes the variance of the
BatchNorm's input between training and inference (Li et al., "Understanding
the Disharmony between Dropout and Batch Normalization by Variance Shift",
CVPR 2019). For a feature with mean :math:`c` and variance :math:`v` through
inverted dropout with keep probability :math:`q = 1 - p`:

.. math::
    \operatorname{Var}_{\text{train}} = \frac{c^2 + v}{q} - c^2, \qquad
    \operatorname{Var}_{\text{eval}} = v, \qquad
    \text{ratio} = \frac{\operatorname{Var}_{\text{eval}}}{\operatorname{Var}_{\text{train}}}
                 = \frac{q\,v}{c^2 + v - q\,c^2} \;\le 1.

BatchNorm's running variance is collected in training mode, so it tracks
:math:`\operatorname{Var}_{\text{train}}`; at inference the layer divides an
input of variance :math:`\operatorname{Var}_{\text{eval}}` by it and every
later layer sees activations scaled by :math:`\sqrt{\text{ratio}}`.

* :func:`variance_shift` measures the two variances (and the running variance)
  for every BatchNorm layer of a model, without changing the model.
* :func:`expected_ratio` is the formula above, averaged over channels as
  :func:`variance_shift` averages; :func:`predicted_shift` evaluates it for
  every BatchNorm layer fed directly by a dropout layer
  (:func:`dropouts_feeding`), with the measured mean and variance of that
  dropout's input; :func:`sweep_variance_shift` measures and predicts the
  ratio over a range of drop rates on one trained network.
* :func:`recalibrate` re-estimates the running statistics with dropout off, so
  that inference normalises with the statistics it actually meets -- the cheap
  fix of Li et al. (section 5) besides moving dropout after the last BN layer.

The measurement and the prediction live in :mod:`dropkit.bn.shift`, the
recalibration in :mod:`dropkit.bn.recalibration`; both read the model's
BatchNorm inputs through the moment collection of ``dropkit.bn._moments``.
"""

from dropkit.bn._moments import Data as Data  # the accepted `data`, for type hints
from dropkit.bn.recalibration import recalibrate
from dropkit.bn.shift import FEEDING_TYPES as FEEDING_TYPES  # what dropouts_feeding recognises
from dropkit.bn.shift import (
    ShiftSweep,
    VarianceShift,
    dropouts_feeding,
    expected_ratio,
    predicted_shift,
    sweep_variance_shift,
    variance_shift,
)

__all__ = [
    "ShiftSweep",
    "VarianceShift",
    "dropouts_feeding",
    "expected_ratio",
    "predicted_shift",
    "recalibrate",
    "sweep_variance_shift",
    "variance_shift",
]
