"""Device placement for training: tf.distribute strategy, mixed precision, learning-rate scaling."""

from __future__ import annotations

import json
import os

from .config import TrainConfig
from .errors import ConfigError


def gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def make_strategy(cfg: TrainConfig):
    """The tf.distribute strategy ``train.strategy`` asks for; ``auto`` mirrors only over several GPUs."""
    import tensorflow as tf

    choice = cfg.strategy
    if choice == "auto":
        choice = "mirrored" if len(gpus()) > 1 else "none"
    if choice == "none":
        return tf.distribute.get_strategy()  # the default, single-device strategy
    if choice == "mirrored":
        return tf.distribute.MirroredStrategy()
    if "TF_CONFIG" not in os.environ:
        raise ConfigError("train.strategy=multiworker needs the cluster in the TF_CONFIG environment variable")
    try:
        json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {e}") from e
    return tf.distribute.MultiWorkerMirroredStrategy()


def configure_precision(cfg: TrainConfig) -> str:
    """Set the global Keras dtype policy: mixed_float16 on GPUs only (auto/on), float32 otherwise."""
    import keras

    use = cfg.mixed_precision == "on" or (cfg.mixed_precision == "auto" and bool(gpus()))
    if use and not gpus():
        raise ConfigError("train.mixed_precision=on needs a GPU; on a CPU it is slower, use auto or off")
    policy = "mixed_float16" if use else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def scaled_lr(cfg: TrainConfig, replicas: int) -> float:
    """train.lr is for the whole (global) batch; ``lr_scaling: linear`` multiplies it by the replica count."""
    return cfg.lr * replicas if cfg.lr_scaling == "linear" else cfg.lr
