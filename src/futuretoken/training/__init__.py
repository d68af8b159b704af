"""Training: the loop, its objective, optimizer, distributed wrapping and activation checkpointing."""

from .many import train_all
from .objective import LossModule, evaluate
from .trainer import Trainer, TrainingError, TrainResult, ensure_data, train

__all__ = ["LossModule", "TrainResult", "Trainer", "TrainingError", "ensure_data", "evaluate", "train", "train_all"]
