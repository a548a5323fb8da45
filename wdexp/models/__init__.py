"""Models a weight-decay study trains: each owns its parameters, its loss and what it reports.

The contract is :mod:`wdexp.models.contract`: a :class:`~wdexp.models.contract.Model` has
``loss()`` and ``metrics(loss)``; optional capabilities (mini-batches, a known solution, a closed
form, artifacts, default no-decay names) are Protocols of their own. The built-in models, one
module each:

    quadratic.py   Quadratic: the seed notebook's bowl, sum_i c_i w_i**2
    ridge.py       Ridge: linear regression on synthetic data, the ridge solution in closed form
    weights.py     what quadratic and ridge share: dtypes, inits, logged weights

Plain ``nn.Module`` nets, trained on the ``data`` group through supervised.py:

    mlp.py         MLP: ReLU layers (residual ones for MNIST-1D's reference MLP)
    cnn.py         CNN: the MNIST-1D paper's reference convolutional net
    bn_mlp.py      BNMLP: bias-free layers each followed by BatchNorm, every weight
                   scale-invariant
    supervised.py  Supervised: a net, the data and its loss as a Model
"""

from wdexp.models.bn_mlp import BNMLP
from wdexp.models.cnn import CNN
from wdexp.models.contract import (
    Artifacts,
    ClosedForm,
    DefaultNoDecay,
    Identified,
    KnownSolution,
    MiniBatched,
    Model,
)
from wdexp.models.mlp import MLP
from wdexp.models.quadratic import Quadratic
from wdexp.models.ridge import Ridge
from wdexp.models.weights import parse_dtype

__all__ = ["BNMLP", "CNN", "MLP", "Artifacts", "ClosedForm", "DefaultNoDecay", "Identified",
           "KnownSolution", "MiniBatched", "Model", "Quadratic", "Ridge", "parse_dtype"]
