"""Data modules (resolution as a first-class knob) and the one preprocessing they share."""

from lightclf.data.modules import (
    CIFAR10,
    CIFAR100,
    FASHION_MNIST_CLASSES,
    Digits,
    EpochSeededSampler,
    FashionMNIST,
    ImageDataModule,
    ImageFolder,
)
from lightclf.data.preprocessing import Preprocessing, resize_uint8
from lightclf.errors import DataError

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "FASHION_MNIST_CLASSES",
    "DataError",
    "Digits",
    "EpochSeededSampler",
    "FashionMNIST",
    "ImageDataModule",
    "ImageFolder",
    "Preprocessing",
    "resize_uint8",
]
