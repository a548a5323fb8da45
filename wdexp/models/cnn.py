"""The MNIST-1D paper's reference CNN (Greydanus, "Scaling Down Deep Learning", 2020)."""

from __future__ import annotations

from torch import Tensor, nn

from wdexp.config import positive_int
from wdexp.models.weights import parse_dtype
from wdexp.vocabulary import ConfigError


def _conv_length(length: int, kernel: int, stride: int = 2, padding: int = 1) -> int:
    return (length + 2 * padding - kernel) // stride + 1


class CNN(nn.Module):
    """Three ``Conv1d`` layers (kernels 5, 3, 3; stride 2; padding 1; ReLU) and a linear
    classifier on the flattened features: the paper's ``ConvBase``. On 40-long MNIST-1D signals
    with 25 channels that is 25 * 5 = 125 features into the classifier, 5 210 parameters.
    """

    def __init__(self, in_features: int, out_features: int, channels: int = 25,
                 dtype: str = "float32") -> None:
        super().__init__()
        channels = positive_int("channels", channels)
        length = positive_int("in_features", in_features)
        for kernel in (5, 3, 3):
            length = _conv_length(length, kernel)
        if length < 1:
            raise ConfigError("in_features", "is too short for three stride-2 convolutions",
                              in_features)
        torch_dtype = parse_dtype(dtype)
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1, dtype=torch_dtype)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1, dtype=torch_dtype)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1, dtype=torch_dtype)
        self.linear = nn.Linear(channels * length, positive_int("out_features", out_features),
                                dtype=torch_dtype)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(len(x), 1, -1)
        x = self.conv3(self.conv2(self.conv1(x).relu()).relu()).relu()
        return self.linear(x.flatten(1))
