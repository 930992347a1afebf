"""Old home of the LR schedules (``lightclf.schedules.OneCycle`` in configs and checkpoints): see
:mod:`lightclf.training.schedules`."""

from lightclf.training.schedules import *  # noqa: F403
from lightclf.training.schedules import __all__  # noqa: F401
