r"""Closed forms of the quadratic models, in NumPy float64: what theory says a run should do.

Both :class:`~wdexp.models.Quadratic` and :class:`~wdexp.models.Ridge` have a loss of the form

.. math:: L(w) = w^\top A w - 2 b^\top w + c

(``A = diag(c_i)``, ``b = 0`` for the bowl; ``A = X^\top X/n``, ``b = X^\top y/n``,
``c = y^\top y/n`` for ridge). With coupled weight decay :math:`\lambda` plain gradient descent
follows the gradient of :math:`L + \tfrac{\lambda}{2}\lVert w\rVert^2`, i.e. :math:`Hw - 2b` with
:math:`H = 2A + \lambda I`, so

.. math:: w_t = w^* + (I - \eta H)^t (w_0 - w^*), \qquad w^* = 2 H^{-1} b.

No torch here: the pair's figures (drawn in the training process at its end) show these next
to the measured curves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class QuadraticForm:
    a: np.ndarray  # (n, n), symmetric positive semi-definite
    b: np.ndarray  # (n,)
    c: float

    def loss(self, w: np.ndarray) -> np.ndarray:
        """L at each row of ``w`` (shape (..., n))."""
        return np.einsum("...i,ij,...j->...", w, self.a, w) - 2 * w @ self.b + self.c

    def __call__(self, w_1: np.ndarray, w_2: np.ndarray) -> np.ndarray:
        """L on a grid of two-weight models (the loss surface of a trajectory plot)."""
        return self.loss(np.stack([w_1, w_2], axis=-1))

    def minimiser(self, weight_decay: float) -> np.ndarray:
        """The minimiser of :math:`L + \\tfrac{\\lambda}{2}\\lVert w\\rVert^2`."""
        hessian = 2 * self.a + weight_decay * np.eye(len(self.b))
        return np.linalg.solve(hessian, 2 * self.b)

    def gradient_descent(self, init: np.ndarray, lr: float, weight_decay: float,
                         steps: np.ndarray) -> dict[str, list[float]]:
        """``loss`` and ``w_1..w_n`` of full-batch gradient descent at each of ``steps``."""
        hessian = 2 * self.a + weight_decay * np.eye(len(self.b))
        target = np.linalg.solve(hessian, 2 * self.b)
        # Eigen-decomposition gives every power of (I - lr H) at once, without a loop of products.
        eigenvalues, vectors = np.linalg.eigh(hessian)
        offset = vectors.T @ (np.asarray(init, dtype=np.float64) - target)
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging arm's path is inf
            factors = np.power.outer(1 - lr * eigenvalues, steps)  # (n, len(steps))
            weights = target + (vectors @ (factors * offset[:, None])).T
            path = {"step": np.asarray(steps).tolist(), "loss": self.loss(weights).tolist()}
        path.update({f"w_{i + 1}": weights[:, i].tolist() for i in range(weights.shape[1])})
        return path
