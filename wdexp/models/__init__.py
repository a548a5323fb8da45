"""Models a weight-decay study trains: each owns its parameters, its loss and what it reports.

The contract is :mod:`wdexp.models.contract`: a :class:`~wdexp.models.contract.Model` has
``loss()`` and ``metrics(loss)``; optional capabilities (mini-batches, a known solution, a closed
form, artifacts, default no-decay names) are Protocols of their own. The built-in models, one
module each:

    quadratic.py   Quadratic: the seed notebook's bowl, sum_i c_i w_i**2
    ridge.py       Ridge: linear regression on synthetic data, the ridge solution in closed form
    mlp.py         DigitsMLP: a ReLU classifier on scikit-learn's handwritten digits
    weights.py     what quadratic and ridge share: dtypes, inits, logged weights
"""

from wdexp.models.contract import (
    Artifacts,
    ClosedForm,
    DefaultNoDecay,
    KnownSolution,
    MiniBatched,
    Model,
)
from wdexp.models.mlp import DigitsMLP
from wdexp.models.quadratic import Quadratic
from wdexp.models.ridge import Ridge
from wdexp.models.weights import parse_dtype

__all__ = ["Artifacts", "ClosedForm", "DefaultNoDecay", "DigitsMLP", "KnownSolution",
           "MiniBatched", "Model", "Quadratic", "Ridge", "parse_dtype"]
