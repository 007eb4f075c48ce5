"""A small CNN on scikit-learn's bundled digits (8x8 images), trained with
DistributedDataParallel over gloo, checkpointing every epoch.

    modelyard train submit examples/digits/train.py:train --workers 2 -P epochs=8

Every worker gets the PyTorchJob environment from the launcher, so this is also the
code a cluster would run. After a restart (a worker was killed) training resumes from
the last checkpoint. ``kill_at_epoch`` makes rank 1 kill itself once, on the first start,
to show that.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from modelyard.training import checkpoint


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(images))
        return out


def data(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.25, random_state=seed, stratify=digits.target
    )
    return (
        TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
        TensorDataset(torch.from_numpy(x_test), torch.from_numpy(y_test)),
    )


def accuracy(model: nn.Module, dataset: TensorDataset) -> float:
    model.eval()
    with torch.no_grad():
        images, labels = dataset.tensors
        predicted = model(images).argmax(dim=1)
    model.train()
    return float((predicted == labels).float().mean())


def train(
    epochs: int = 8, batch_size: int = 64, lr: float = 0.01, kill_at_epoch: int = -1
) -> dict[str, Any]:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    train_set, test_set = data()
    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    resumed = checkpoint.load()
    start = 0
    if resumed is not None:
        model.load_state_dict(resumed.state["model"])
        optimizer.load_state_dict(resumed.state["optimizer"])
        start = resumed.step + 1
    ddp = DistributedDataParallel(model)
    sampler = DistributedSampler(train_set, seed=0)
    loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler)
    first_start = os.environ.get("MODELYARD_RESTART_COUNT", "0") == "0"
    for epoch in range(start, epochs):
        if first_start and epoch == kill_at_epoch and rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        sampler.set_epoch(epoch)
        for images, labels in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(ddp(images), labels)
            loss.backward()
            optimizer.step()
        checkpoint.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict()}, step=epoch
        )
        dist.barrier()
    result = {"accuracy": accuracy(model, test_set), "resumed_from": start, "epochs": epochs}
    dist.destroy_process_group()
    return result
