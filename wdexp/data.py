"""The ``data`` group: what a plain ``nn.Module`` trains and is tested on, as tensors.

``data._target_`` names a loader, a callable taking the group's other keys, that returns
:class:`Data` or a ``(train, test)`` pair, each a ``torch.utils.data.Dataset`` or an ``(x, y)``
pair of tensors. wdexp holds the whole set as tensors on the run's device (these are data sets
of thousands of samples, where a DataLoader would cost more than the net). Its own keys in the
group, popped before the loader is called:

``loss``
    ``cross_entropy`` or ``mse`` (against one-hot targets when ``classes`` is set).
``batch_size``
    samples per optimizer step; ``null`` trains full batch, one step per epoch.
``batch_seed``
    the mini-batch order of every epoch, the same for both arms (config: ``${seed}``).
``features``, ``classes``
    the shape the data promises, for models to interpolate (``${data.features}``); checked
    against what the loader returns.
``fraction``
    the share of the training set used (its first samples; default 1): the data-set size of a
    scaling study. The test set stays whole.

A data set's identity — its generator's arguments and a SHA-256 of its tensors — is logged as
``data.*`` params of the pair run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from wdexp.config import finite_number, instantiable, positive_int, torch_seed
from wdexp.vocabulary import ConfigError

LOSSES = ("cross_entropy", "mse")
TASK_KEYS = ("loss", "batch_size", "batch_seed", "features", "classes", "fraction")


@dataclass(frozen=True)
class Data:
    """A train/test split as tensors; ``identity`` holds what says which data this is."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    identity: Mapping[str, str] = field(default_factory=dict)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Data:
        """On ``device``, inputs in the net's ``dtype`` (floating targets too)."""
        def move(t: Tensor) -> Tensor:
            return t.to(device, dtype if t.is_floating_point() else None)

        return Data(move(self.x_train), move(self.y_train), move(self.x_test),
                    move(self.y_test), self.identity)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for tensor in (self.x_train, self.y_train, self.x_test, self.y_test):
            array = tensor.detach().cpu().contiguous().numpy()
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class Task:
    """How a net trains on the data: the group's wdexp keys, checked."""

    loss: str
    batch_size: int | None
    batch_seed: int
    classes: int | None


def digits(test_fraction: float = 0.25, split_seed: int = 0) -> Data:
    """scikit-learn's 8x8 handwritten digits (1797 samples, shipped with it): 64 features scaled
    to [0, 1], 10 classes, a stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    test_fraction = finite_number("test_fraction", test_fraction, minimum=0, strict=True,
                                  below=1)
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data / 16.0, data.target, test_size=test_fraction, random_state=split_seed,
        stratify=data.target)
    return Data(torch.as_tensor(x_train), torch.as_tensor(y_train), torch.as_tensor(x_test),
                torch.as_tensor(y_test), {"source": "sklearn.datasets.load_digits"})


def mnist1d(**generator_args: Any) -> Data:
    """MNIST-1D (Greydanus, "Scaling Down Deep Learning", 2020), generated here by the
    ``mnist1d`` package with its published arguments (``make_dataset(get_dataset_args())``:
    4000 train / 1000 test, 40 features, 10 classes), never downloaded. Any of its arguments
    can be changed (``+data.num_samples=10000``); all of them are logged."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url")  # the download path, never used
    for key, value in generator_args.items():
        if key not in args:
            raise ConfigError(key, "is not an argument of mnist1d's get_dataset_args()", value)
        args[key] = value
    return _mnist1d(json.dumps(args, sort_keys=True))


@functools.lru_cache(maxsize=4)
def _mnist1d(args_json: str) -> Data:
    """Generated once per machine and arguments (seconds of NumPy), kept in the user's cache
    folder for the next process (:func:`cache_file`) and in this one; the tensors are never
    written to, so every caller can share them."""
    args = json.loads(args_json)
    path = cache_file(args_json)
    made = _read_kept(path)
    if made is None:
        made = _generate(args)
        _keep(path, made)
    identity = {"source": "mnist1d.data.make_dataset",
                **{f"generator.{k}": str(v) for k, v in args.items()}}
    return Data(torch.as_tensor(made["x"]), torch.as_tensor(made["y"]),
                torch.as_tensor(made["x_test"]), torch.as_tensor(made["y_test"]), identity)


_PARTS = ("x", "y", "x_test", "y_test")


def _generate(args: dict[str, Any]) -> dict[str, np.ndarray]:
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    # make_dataset seeds Python's and NumPy's global generators; the job's stay as they were.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        return make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def cache_file(args_json: str) -> Path:
    """Where a generated MNIST-1D is kept: ``$XDG_CACHE_HOME/wdexp`` (else ``~/.cache/wdexp``),
    one file per generator arguments and ``mnist1d`` version."""
    key = hashlib.sha256(f"{version('mnist1d')}\n{args_json}".encode()).hexdigest()[:16]
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wdexp" / f"mnist1d-{key}.npz"


def _read_kept(path: Path) -> dict[str, np.ndarray] | None:
    """The kept arrays (exactly as generated: .npz holds the raw values), None where there is
    no usable file — missing, cut short, not an .npz — and the set is generated again."""
    try:
        with np.load(path, allow_pickle=False) as kept:
            return {part: kept[part] for part in _PARTS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _keep(path: Path, made: Mapping[str, np.ndarray]) -> None:
    """Written to a temporary file renamed into place, so that jobs generating the same set at
    once never read half a file; a cache folder that cannot be written is passed over."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",
                                         delete=False) as file:
            temporary = file.name
            np.savez(file, **{part: made[part] for part in _PARTS})
        os.replace(temporary, path)
    except OSError:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _tensors(key: str, part: Any) -> tuple[Tensor, Tensor]:
    if isinstance(part, tuple | list) and len(part) == 2 and all(isinstance(t, Tensor)
                                                                   for t in part):
        return part[0], part[1]
    if isinstance(part, Dataset):
        x, y = default_collate([part[i] for i in range(len(part))])  # type: ignore[arg-type]
        return x, y
    raise ConfigError(key, "must return wdexp.data.Data or (train, test), each a Dataset of "
                      "(x, y) or an (x, y) pair of tensors", type(part).__name__)


def _as_data(key: str, loaded: Any) -> Data:
    if isinstance(loaded, Data):
        return loaded
    if not (isinstance(loaded, tuple | list) and len(loaded) == 2):
        raise ConfigError(key, "must return wdexp.data.Data or a (train, test) pair",
                          type(loaded).__name__)
    (x_train, y_train), (x_test, y_test) = _tensors(key, loaded[0]), _tensors(key, loaded[1])
    return Data(x_train, y_train, x_test, y_test)


def _task(cfg: Mapping[str, Any]) -> Task:
    loss = cfg.get("loss", "cross_entropy")
    if loss not in LOSSES:
        raise ConfigError("data.loss", f"must be one of {', '.join(LOSSES)}", loss)
    batch_size = cfg.get("batch_size")
    if batch_size is not None:
        batch_size = positive_int("data.batch_size", batch_size)
    classes = cfg.get("classes")
    if classes is not None:
        classes = positive_int("data.classes", classes)
    if loss == "cross_entropy" and classes is None:
        raise ConfigError("data.classes", "must be set for loss=cross_entropy", None)
    return Task(loss, batch_size, torch_seed("data.batch_seed", cfg.get("batch_seed", 0)),
                classes)


def load(cfg: DictConfig) -> tuple[Data, Task]:
    """The ``data`` group → the data set (on the CPU) and how to train on it."""
    loader, kwargs = instantiable("data", cfg, object, "data loader (a callable)",
                                  reserved=TASK_KEYS, callable_target=True)
    declared = {key: kwargs.pop(key, None) for key in TASK_KEYS}
    task = _task(declared)
    try:
        data = _as_data("data._target_", loader(**kwargs))
    except ConfigError as error:
        raise (error if error.key.startswith("data.") else error.within("data")) from None
    _check_shapes(data, declared.get("features"), task)
    fraction = declared["fraction"]
    if fraction is not None:
        fraction = finite_number("data.fraction", fraction, minimum=0, strict=True)
        if fraction > 1:
            raise ConfigError("data.fraction", "must be a share of the training set in (0, 1]",
                              fraction)
        kept = max(round(len(data.y_train) * fraction), 1)
        data = Data(data.x_train[:kept], data.y_train[:kept], data.x_test, data.y_test,
                    data.identity)
    return Data(data.x_train, data.y_train, data.x_test, data.y_test,
                {**data.identity, "sha256": data.sha256(),
                 "n_train": str(len(data.y_train)), "n_test": str(len(data.y_test))}), task


def _check_shapes(data: Data, features: Any, task: Task) -> None:
    if len(data.x_train) != len(data.y_train) or len(data.x_test) != len(data.y_test):
        raise ConfigError("data._target_", "returned inputs and targets of different lengths",
                          show_value=False)
    if features is not None:
        got = int(np.prod(data.x_train.shape[1:]))
        if got != features:
            raise ConfigError("data.features", f"does not match the data ({got} features)",
                              features)
    if task.classes is not None:
        if data.y_train.is_floating_point():
            raise ConfigError("data.classes", "is set but the targets are not class indices",
                              task.classes)
        top = int(max(data.y_train.max(), data.y_test.max()))
        if top >= task.classes:
            raise ConfigError("data.classes", f"is too small for the data's labels (up to "
                              f"{top})", task.classes)
