"""Training loops (on accelerate), evaluation, run folders and plots."""

from .config import VLTrainConfig
from .vl_model import VLMultiTaskModel
from .vl_trainer import build_model, train_vl

__all__ = ["VLTrainConfig", "VLMultiTaskModel", "build_model", "train_vl"]
