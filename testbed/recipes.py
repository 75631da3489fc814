"""Training recipes: the options of central training and of a device's local training.

Kept apart from the experiment config so that scenarios (whose options hold a
local recipe) and the config (which validates the scenarios) need not import
each other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Central training; the defaults are the reference recipe of docs/MODELS.md."""

    model_config = ConfigDict(extra="forbid")
    epochs: float = Field(default=2.0, gt=0)
    batch_size: int = Field(default=128, ge=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(default=3e-3, gt=0)
    momentum: float = Field(default=0.9, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"  # central training; local rounds: constant
    train_subset: int | None = Field(default=None, ge=1)  # central training on the first N images


class LocalTrainConfig(TrainConfig):
    """A device's training in a federated round (its own defaults, so setting one key keeps the rest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    epochs: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=32, ge=1)
    optimizer: Literal["adam", "sgd"] = "sgd"
    lr: float = Field(default=0.05, gt=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "constant"
