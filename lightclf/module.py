"""Old home of ImageClassifier (``lightclf.module.ImageClassifier``): see :mod:`lightclf.training.module`."""

from lightclf.training.module import *  # noqa: F403
from lightclf.training.module import __all__  # noqa: F401
