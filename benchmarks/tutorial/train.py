"""The "tutorial pattern": Hydra + MLflow as a typical user wires them, the reference wdexp's
tracked runs are compared with.

The seed notebook's two arms (SGD with and without weight decay, from one random init) trained
in lockstep, with one ``mlflow.log_metrics`` call per epoch.
Usage: python benchmarks/tutorial/train.py [-m] [epochs=N weight_decay=... tracking_uri=...]
"""

import random

import hydra
import mlflow
import torch
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_experiment(cfg.experiment)
    with mlflow.start_run():
        mlflow.log_params({k: cfg[k] for k in ("epochs", "lr", "weight_decay", "seed")})
        random.seed(cfg.seed)
        init = (random.random(), random.random())
        arms = {}
        for name, weight_decay in (("plain", 0.0), ("wd", cfg.weight_decay)):
            w = [torch.tensor([v], requires_grad=True) for v in init]
            arms[name] = (w, torch.optim.SGD(w, lr=cfg.lr, weight_decay=weight_decay))
        for epoch in range(cfg.epochs):
            metrics = {}
            for name, (w, op) in arms.items():
                loss = (1 / 20) * w[0] ** 2 + w[1] ** 2
                metrics |= {f"{name}_loss": loss.item(), f"{name}_w_1": w[0].item(),
                            f"{name}_w_2": w[1].item()}
                loss.backward()
                op.step()
                op.zero_grad()
            # One call per epoch is the pattern's cost, and what this reference measures.
            mlflow.log_metrics(metrics, step=epoch)


if __name__ == "__main__":
    main()
