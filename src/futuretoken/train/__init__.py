from .checkpoint import CheckpointError, latest_valid_checkpoint, list_checkpoints, load_model
from .sampler import WindowSampler
from .trainer import Trainer, TrainingError, TrainResult, evaluate, train

__all__ = [
    "CheckpointError", "TrainResult", "Trainer", "TrainingError", "WindowSampler", "evaluate",
    "latest_valid_checkpoint", "list_checkpoints", "load_model", "train",
]
