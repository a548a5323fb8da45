"""The seed notebook as a plain script: the reference every wdexp timing is compared with.

Two scalar float32 weights, loss (1/20)*w_1**2 + w_2**2, SGD(lr=0.01) and
SGD(lr=0.01, weight_decay=0.01) from one random init, 30 epochs, the table printed side by side.
Usage: python benchmarks/notebook.py [EPOCHS]
"""

import random
import sys

import torch

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
random.seed(0)
init = (random.random(), random.random())


def train(weight_decay: float) -> list[tuple[float, float, float]]:
    w_1 = torch.tensor([init[0]], requires_grad=True)
    w_2 = torch.tensor([init[1]], requires_grad=True)
    op = torch.optim.SGD([w_1, w_2], lr=0.01, weight_decay=weight_decay)
    rows = []
    for _ in range(epochs):
        loss = (1 / 20) * w_1**2 + w_2**2
        rows.append((loss.item(), w_1.item(), w_2.item()))
        loss.backward()
        op.step()
        op.zero_grad()
    return rows


plain, decayed = train(0.0), train(0.01)
header = ("loss", "w_1", "w_2")
print(f"{'epoch':>5} " + " ".join(f"{h:>10}" for h in header) + " | "
      + " ".join(f"{h + '_wd':>10}" for h in header))
for epoch, (a, b) in enumerate(zip(plain, decayed, strict=True)):
    print(f"{epoch:>5} " + " ".join(f"{v:>10.6f}" for v in a) + " | "
          + " ".join(f"{v:>10.6f}" for v in b))
