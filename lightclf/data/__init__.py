"""Data modules (resolution as a first-class knob), one file per data set family, and the one
preprocessing they share.

In-memory sets (Fashion-MNIST, CIFAR, scikit-learn digits) are resized once at setup and kept
as one uint8 stack per split *on the training device* (Fashion-MNIST is 47 MB): each batch is
one index of that stack by the epoch-seeded permutation (``sampling``), and normalisation and
augmentation run on the device (``base``). ImageFolder decodes per sample in worker processes
into uint8 (pinned when training on a GPU) and is normalised on the device too.
"""

from lightclf.data.base import ImageDataModule
from lightclf.data.cifar import CIFAR10, CIFAR100
from lightclf.data.digits import Digits
from lightclf.data.fashion_mnist import FASHION_MNIST_CLASSES, FashionMNIST
from lightclf.data.image_folder import ImageFolder
from lightclf.data.preprocessing import Preprocessing, resize_uint8
from lightclf.data.sampling import (
    BatchIndexSampler,
    EpochSeededSampler,
    InMemorySplit,
    ResumableLoader,
    SeededDraws,
    rank_seed,
)
from lightclf.errors import DataError

__all__ = [
    "BatchIndexSampler",
    "CIFAR10",
    "CIFAR100",
    "FASHION_MNIST_CLASSES",
    "DataError",
    "Digits",
    "EpochSeededSampler",
    "FashionMNIST",
    "ImageDataModule",
    "ImageFolder",
    "InMemorySplit",
    "Preprocessing",
    "ResumableLoader",
    "SeededDraws",
    "rank_seed",
    "resize_uint8",
]
