"""Plain and residual nets, their data, training and run store (He et al., "Deep Residual
Learning for Image Recognition"). Needs only torch and torchvision."""

from .config import PRESETS, SWEEPS, ConfigError, TrainConfig, apply_preset
from .data import DataError, Dataset, load_dataset
from .models import build_model, list_models, summary
from .store import Run, RunStore, StoreError
from .train import Callback, TrainContext, load_model, train

__all__ = [
    "PRESETS",
    "SWEEPS",
    "ConfigError",
    "TrainConfig",
    "apply_preset",
    "DataError",
    "Dataset",
    "load_dataset",
    "build_model",
    "list_models",
    "summary",
    "Run",
    "RunStore",
    "StoreError",
    "Callback",
    "TrainContext",
    "load_model",
    "train",
]
