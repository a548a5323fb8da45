"""A plain ``torch.nn.Module`` as a wdexp model: the net, the ``data`` group's tensors and its
loss, behind the :mod:`~wdexp.models.contract` protocols.

Parameter names (for ``optimizer.no_decay`` and the ``norm.<name>`` metrics) are the net's
own. The net trains in train mode and is tested in eval mode (BatchNorm's running statistics,
no dropout). With ``data.batch_size`` an epoch is one pass over the training set in
mini-batches whose order comes from ``data.batch_seed`` and the epoch alone, so both arms see
the same batches; without it, one full-batch step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from wdexp.data import Data, Task


class Supervised:
    """Full batch: ``loss()`` is the whole training set's, in train mode."""

    def __init__(self, net: nn.Module, data: Data, task: Task) -> None:
        self.net, self.data, self.task = net, data, task

    # What the study, engine and optimizers use of an nn.Module, delegated to the net.
    def parameters(self) -> Iterator[nn.Parameter]:
        return self.net.parameters()

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return self.net.named_parameters()

    def buffers(self) -> Iterator[Tensor]:
        return self.net.buffers()

    def to(self, device: torch.device) -> Supervised:
        self.net.to(device)
        dtype = next(self.net.parameters(), torch.empty(0)).dtype
        self.data = self.data.to(device, dtype if dtype.is_floating_point else torch.float32)
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Supervised:
        # Each arm trains its own copy of the net on the one (read-only) data set.
        twin = copy.copy(self)
        twin.net = copy.deepcopy(self.net, memo)
        return twin

    def default_no_decay(self) -> list[str]:
        """Biases and norm parameters (every parameter of at most one dimension)."""
        return [name for name, p in self.net.named_parameters() if p.ndim <= 1]

    def params(self) -> dict[str, str]:
        """What identifies the data, logged as ``data.*`` params."""
        return {f"data.{key}": value for key, value in self.data.identity.items()}

    def objective(self, output: Tensor, target: Tensor) -> Tensor:
        if self.task.loss == "cross_entropy":
            return functional.cross_entropy(output, target)
        if self.task.classes is not None:  # MSE on one-hot targets
            target = functional.one_hot(target, self.task.classes).to(output.dtype)
        return functional.mse_loss(output, target.reshape(output.shape))

    def loss(self) -> Tensor:
        return self.objective(self.net(self.data.x_train), self.data.y_train)

    def metrics(self, loss: Tensor) -> dict[str, float]:
        """``loss`` (as given), ``test_loss``, ``test_accuracy`` (class targets), and the L2 norm
        of all parameters and of each, in one host transfer."""
        with torch.no_grad():
            self.net.eval()
            try:
                output = self.net(self.data.x_test)
            finally:
                self.net.train()
            values = [loss.detach().reshape(()), self.objective(output, self.data.y_test)]
            names = ["loss", "test_loss"]
            if self.task.classes is not None:
                values.append((output.argmax(dim=1) == self.data.y_test).to(loss.dtype).mean())
                names.append("test_accuracy")
            named = list(self.net.named_parameters())
            norms = torch.stack([torch.linalg.vector_norm(p) for _, p in named]).to(loss.dtype)
            flat = torch.cat([torch.stack([v.to(loss.dtype) for v in values]),
                              torch.linalg.vector_norm(norms).reshape(1), norms]).tolist()
        names += ["weight_norm", *(f"norm.{name}" for name, _ in named)]
        return dict(zip(names, flat, strict=True))


class MiniBatchSupervised(Supervised):
    """Mini-batches: one optimizer step per batch of ``data.batch_size`` samples."""

    @property
    def steps_per_epoch(self) -> int:
        assert self.task.batch_size is not None
        return math.ceil(len(self.data.y_train) / self.task.batch_size)

    def batch_order(self, epoch: int) -> Tensor:
        """Epoch ``epoch``'s order of the training set (on the CPU, whatever the device): its
        mini-batches are the consecutive ``data.batch_size`` indices of it."""
        # Modulo 2**64, as torch takes a negative seed: a large job seed (any the config edge
        # accepts) stays in torch's range, and every smaller one keeps its batch order.
        seed = (self.task.batch_seed * 1_000_003 + epoch) % 2**64
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(len(self.data.y_train), generator=generator)

    def batch_indices(self, epoch: int) -> list[Tensor]:
        """Epoch ``epoch``'s mini-batches as indices into the training set, in order."""
        assert self.task.batch_size is not None
        order = self.batch_order(epoch)
        return [order[start:start + self.task.batch_size].to(self.data.x_train.device)
                for start in range(0, len(order), self.task.batch_size)]

    def batches(self, epoch: int) -> Iterator[Tensor]:
        for index in self.batch_indices(epoch):
            yield self.objective(self.net(self.data.x_train[index]), self.data.y_train[index])


def supervised(net: nn.Module, data: Data, task: Task) -> Supervised:
    net.train()
    return (Supervised if task.batch_size is None else MiniBatchSupervised)(net, data, task)
