"""Old home of the callbacks (``lightclf.callbacks.X`` in configs and checkpoints written before
the training package): the same classes, from :mod:`lightclf.training.callbacks`."""

from lightclf.training.callbacks import *  # noqa: F403
from lightclf.training.callbacks import __all__  # noqa: F401
