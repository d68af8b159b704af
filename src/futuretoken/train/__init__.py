from .checkpoint import CheckpointError, latest_valid_checkpoint, list_checkpoints, load_model, run_data_dir
from .sampler import WindowSampler
from .trainer import Trainer, TrainingError, TrainResult, evaluate, train

__all__ = [
    "CheckpointError", "TrainResult", "Trainer", "TrainingError", "WindowSampler", "evaluate",
    "latest_valid_checkpoint", "list_checkpoints", "load_model", "run_data_dir", "train",
]
