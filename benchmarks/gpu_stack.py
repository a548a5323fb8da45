"""The stacked engine on a GPU (``device=cuda``): its checks and the cost per member.

In one process, with no store (the engine alone, as ``tests/test_stack.py`` drives it):

1. **Checks** on the device: the quadratic's stacked records bit-identical to its separate
   runs'; a float64 BatchNorm MLP grid within 1e-10 relative of its separate runs (the bound
   the CPU tests hold); float32 MNIST-1D MLP grid's final metrics against its separate runs;
   the stacked records bit-identical between two stacks of the same jobs.
2. **Members**: the MNIST-1D reference MLP (``does_decay_help``'s model, AdamW, lr 0.01, batch
   100) as one pair (2 members, a stack's least) and λ x seed grids of 64, 256 and 1024
   members, trained stacked: wall seconds to build the jobs and to train, per member, and peak
   device memory; one pair trained alone
   (``engine.train``, the default launcher's engine) on the same device for the ratio.

Usage: python benchmarks/gpu_stack.py [--device cuda] [--sizes 2,64,256,1024] [--epochs 30]
       [--output FILE.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wdexp import engine, stack, study  # noqa: E402
from wdexp.tracking.records import Step  # noqa: E402

DECAYS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # with one baseline: 8 members per seed
MLP = ("model=mnist1d_mlp", "optimizer=adamw", "optimizer.lr=0.01")


def composed(*overrides: str) -> DictConfig:
    """conf/ composed with ``overrides``, as ``python -m wdexp.train`` composes a job."""
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def jobs(base: DictConfig, grid: Iterable[tuple[int, float]]) -> list[stack.Job]:
    """One job per (seed, λ) of ``grid``: ``base`` with those two values, as a sweep's jobs."""
    out = []
    for seed, decay in grid:
        cfg = copy.deepcopy(base)
        cfg.seed, cfg.optimizer.weight_decay = seed, decay
        built = study.build(cfg)
        out.append(stack.Job(built, engine.random_state(engine.model_device(built.arms[0].model))))
    return out


def stacked(chunk: list[stack.Job]) -> list[list[Step]]:
    per_job: list[list[Step]] = [[] for _ in chunk]
    for steps in stack.Stack(chunk).train():
        for kept, step in zip(per_job, steps, strict=True):
            if step is not None:
                kept.append(step)
    return per_job


def alone(job: stack.Job) -> list[Step]:
    return list(engine.train(job.study.arms, job.study.job.epochs))


def flat(per_job: list[list[Step]], last: bool) -> dict[tuple[int, int, str, str], float]:
    """Every value of every job's steps (``last``: its last step alone) by (job, step, arm,
    key)."""
    return {(job, step.epoch, arm, key): value for job, steps in enumerate(per_job)
            for step in (steps[-1:] if last else steps)
            for arm, values in step.metrics.items() for key, value in values.items()}


def gaps(mine: list[list[Step]], theirs: list[list[Step]], last: bool = False) -> dict[str, float]:
    """Largest relative difference per metric kind (a layer's geometry by its kind) over every
    job, arm and step; both must hold the same values."""
    a, b = flat(mine, last), flat(theirs, last)
    assert a.keys() == b.keys(), a.keys() ^ b.keys()
    out: dict[str, float] = {}
    for where, value in b.items():
        kind = where[3].split("/")[0]
        # A scale-invariant row's cos(grad, weight) is rounding noise around 0.
        floor = 1e-6 if kind == "cos_grad_weight" else 1e-300
        out[kind] = max(out.get(kind, 0.0), abs(a[where] - value) / max(abs(value), floor))
    return out


def exact(steps: list[list[Step]]) -> list:
    return [[(s.epoch, {a: {k: repr(v) for k, v in m.items()} for a, m in s.metrics.items()})
             for s in job] for job in steps]


def grid(seeds: int, decays: tuple[float, ...] = DECAYS) -> list[tuple[int, float]]:
    return [(seed, decay) for seed in range(seeds) for decay in decays]


def checks(device: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Each side builds its own jobs: training moves the models' parameters.
    quadratic, quadratic_grid = composed("model=quadratic", "epochs=200", f"device={device}"), \
        grid(2, (0.01, 0.1, 1.0))
    out["quadratic stacked == separate, every record bit for bit"] = (
        exact(stacked(jobs(quadratic, quadratic_grid)))
        == exact([alone(j) for j in jobs(quadratic, quadratic_grid)]))
    bn_mlp = composed("model=bn_mlp", "model.dtype=float64", "optimizer=adamw",
                      "optimizer.lr=0.01", "data.fraction=0.2", "epochs=4", f"device={device}")
    found = gaps(stacked(jobs(bn_mlp, grid(2, (0.01, 0.3)))),
                 [alone(j) for j in jobs(bn_mlp, grid(2, (0.01, 0.3)))])
    angles = {"angular_update", "equilibrium_ratio"}
    out["float64 bn_mlp grid, largest relative gap (not angles)"] = max(
        v for k, v in found.items() if k not in angles)
    out["float64 bn_mlp grid within 1e-10 (angles 1e-8)"] = (
        all(v < 1e-10 for k, v in found.items() if k not in angles)
        and all(v < 1e-8 for k, v in found.items() if k in angles))
    base = composed(*MLP, "epochs=30", f"device={device}")
    first = stacked(jobs(base, grid(2, (0.1,))))
    found = gaps(first, [alone(j) for j in jobs(base, grid(2, (0.1,)))], last=True)
    out["float32 mnist1d_mlp 30 epochs, final relative gap (loss, test_loss, test_accuracy)"] = [
        found[k] for k in ("loss", "test_loss", "test_accuracy")]
    out["stacked twice, bit for bit"] = exact(first) == exact(stacked(jobs(base, grid(2, (0.1,)))))
    return out


def timed(device: str, run: Callable[[], Any]) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def members(device: str, sizes: list[int], epochs: int) -> list[dict[str, Any]]:
    base = composed(*MLP, f"epochs={epochs}", f"device={device}")
    rows = []
    pair = jobs(base, [(0, 0.1)])[0]
    alone_s = timed(device, lambda: alone(pair))  # warms the device up too
    rows.append({"members": 2, "what": "one pair alone (engine.train)", "train_s": alone_s})
    for size in sizes:
        # one job is two members (a pair: a stack's least); else 8 per seed
        chosen = [(0, 0.1)] if size <= 2 else grid(math.ceil(size / (len(DECAYS) + 1)))
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        built = jobs(base, chosen)
        build_s = time.perf_counter() - start
        # as the stack counts them: one member per distinct arm
        count = len({stack.member_key(job.study, arm) for job in built for arm in job.study.arms})
        train_s = timed(device, lambda built=built: stacked(built))
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
        rows.append({"members": count, "jobs": len(built), "what": "stacked",
                     "build_s": build_s, "train_s": train_s, "per_member_s": train_s / count,
                     "per_member_over_pair": train_s / count / alone_s, "peak_MiB": peak})
        print(json.dumps(rows[-1]), flush=True)
        del built
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="2,64,256,1024")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument("--cpu-sizes", default="",
                        help="the same rows on the CPU too, for these sizes (e.g. 64)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    report: dict[str, Any] = {"device": args.device, "torch": torch.__version__}
    if args.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name()
    for name, part in (("checks", lambda: {} if args.skip_checks else checks(args.device)),
                       ("members", lambda: members(args.device,
                                                   [int(s) for s in args.sizes.split(",")],
                                                   args.epochs)),
                       ("cpu members", lambda: members("cpu", [int(s) for s in
                                                              args.cpu_sizes.split(",") if s],
                                                       args.epochs))):
        start = time.perf_counter()
        try:
            report[name] = part()
        except Exception:  # one part's failure still reports the other's figures
            report[name] = traceback.format_exc()
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
        if args.output:
            args.output.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
