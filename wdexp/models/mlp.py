"""A small classifier on a real data set that ships with scikit-learn: handwritten digits.

8x8 images (64 features scaled to [0, 1]), 10 classes, 1797 samples, a fixed stratified
train/test split. One epoch is a pass over the training set in mini-batches whose order comes
from ``batch_seed`` and the epoch number alone, so both arms see the same batches in the same
order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional

from wdexp.config import finite_number, positive_int, torch_seed
from wdexp.models.weights import parse_dtype


class DigitsMLP(nn.Module):
    """``64 → hidden… → 10`` ReLU network trained with cross-entropy.

    Args:
        hidden: widths of the hidden layers.
        batch_size: mini-batch size.
        test_fraction: share of the data held out (stratified, ``split_seed``).
        batch_seed: orders the mini-batches (config: ``${seed}``).
    """

    def __init__(self, hidden: list[int] | None = None, batch_size: int = 32,
                 test_fraction: float = 0.25, split_seed: int = 0, batch_seed: int = 0,
                 dtype: str = "float32") -> None:
        super().__init__()
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        hidden = [64] if hidden is None else list(hidden)
        for width in hidden:
            positive_int("hidden", width)
        self.batch_size = positive_int("batch_size", batch_size)
        test_fraction = finite_number("test_fraction", test_fraction, minimum=0, strict=True,
                                      below=1)
        torch_dtype = parse_dtype(dtype)
        digits = load_digits()
        x_train, x_test, y_train, y_test = train_test_split(
            digits.data / 16.0, digits.target, test_size=test_fraction,
            random_state=split_seed, stratify=digits.target)
        for name, array, kind in (("x_train", x_train, torch_dtype), ("x_test", x_test,
                                  torch_dtype), ("y_train", y_train, torch.long),
                                  ("y_test", y_test, torch.long)):
            self.register_buffer(name, torch.as_tensor(array, dtype=kind))
        widths = [x_train.shape[1], *hidden, 10]
        self.layers = nn.ModuleList(nn.Linear(a, b, dtype=torch_dtype)
                                    for a, b in itertools.pairwise(widths))
        self.batch_seed = torch_seed("batch_seed", batch_seed)

    def default_no_decay(self) -> list[str]:
        """Biases and other 1-D parameters are not decayed unless the config says otherwise."""
        return [name for name, p in self.named_parameters() if p.ndim <= 1]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = functional.relu(layer(x))
        return self.layers[-1](x)

    def loss(self) -> Tensor:
        return functional.cross_entropy(self(self.x_train), self.y_train)

    def batches(self, epoch: int) -> Iterator[Tensor]:
        # Modulo 2**64, as torch takes a negative seed: a large job seed (any the config edge
        # accepts) stays in torch's range, and every smaller one keeps its batch order.
        generator = torch.Generator().manual_seed((self.batch_seed * 1_000_003 + epoch) % 2**64)
        order = torch.randperm(len(self.y_train), generator=generator)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size].to(self.x_train.device)
            yield functional.cross_entropy(self(self.x_train[index]), self.y_train[index])

    def metrics(self, loss: Tensor) -> dict[str, float]:
        with torch.no_grad():
            logits = self(self.x_test)
            test_loss = functional.cross_entropy(logits, self.y_test)
            accuracy = (logits.argmax(dim=1) == self.y_test).to(loss.dtype).mean()
            norms = torch.stack([torch.linalg.vector_norm(p) for p in self.parameters()])
            values = torch.cat([torch.stack([loss.detach(), test_loss, accuracy,
                                             torch.linalg.vector_norm(norms)]), norms]).tolist()
        names = ["loss", "test_loss", "test_accuracy", "weight_norm",
                 *(f"norm.{name}" for name, _ in self.named_parameters())]
        return dict(zip(names, values, strict=True))
