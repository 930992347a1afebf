"""Data modules (resolution as a first-class knob) and the one preprocessing they share."""

from lightclf.data.modules import (
    CIFAR10,
    CIFAR100,
    FASHION_MNIST_CLASSES,
    BatchIndexSampler,
    Digits,
    EpochSeededSampler,
    FashionMNIST,
    ImageDataModule,
    ImageFolder,
    InMemorySplit,
    rank_seed,
)
from lightclf.data.preprocessing import Preprocessing, resize_uint8
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
    "rank_seed",
    "resize_uint8",
]
