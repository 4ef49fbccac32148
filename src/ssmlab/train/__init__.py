"""One trainer for every experiment (GD / SGD / Adam; hinge / BCE / CE / MSE), seed ensembles.

    from ssmlab.train import TrainConfig, train, train_ensemble
"""

from ssmlab.train.ensemble import train_ensemble, train_ensemble_models
from ssmlab.train.trainer import TrainConfig, TrainResult, evaluate, train

__all__ = ["TrainConfig", "TrainResult", "evaluate", "train", "train_ensemble",
           "train_ensemble_models"]
