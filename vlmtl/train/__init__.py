"""Training: one engine (``Trainer`` running a path's ``Job``), the VL and dense paths on
it, their configs, evaluation, run folders and plots."""

from .config import TrainConfig, VLTrainConfig
from .dense_config import DenseTrainConfig
from .dense_trainer import train_dense
from .engine import Job, Trainer
from .vl_model import VLMultiTaskModel
from .vl_trainer import build_model, train_vl

__all__ = [
    "Trainer",
    "Job",
    "TrainConfig",
    "VLTrainConfig",
    "DenseTrainConfig",
    "VLMultiTaskModel",
    "build_model",
    "train_vl",
    "train_dense",
]
