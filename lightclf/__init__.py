"""lightclf: train, measure and compare lightweight image classifiers (Sun, Zhang & He 2020)."""

from lightclf.models import ConfigError, DDSNet, create_network

__version__ = "0.1.0"
__all__ = ["ConfigError", "DDSNet", "create_network", "__version__"]
