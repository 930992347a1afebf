"""Network factory: the proposed DDSNet family (timm-registered), any timm model, torchvision GoogLeNet."""

from __future__ import annotations

import difflib
from typing import Any

import timm
from torch import nn

from lightclf.errors import ConfigError
from lightclf.models.ddsnet import DDSNet  # registers the ddsnet* models in timm

__all__ = ["ConfigError", "DDSNet", "create_network", "is_known_network", "PROPOSED_NETWORKS", "TORCHVISION_NETWORKS"]

PROPOSED_NETWORKS = ("ddsnet", "ddsnet_nodilation", "ddsnet_plainconv", "ddsnet_plainconv_nodilation")
TORCHVISION_NETWORKS = ("googlenet",)


def is_known_network(name: str) -> bool:
    """True when ``name`` is a torchvision network lightclf builds or a model in timm's registry."""
    return name in TORCHVISION_NETWORKS or timm.is_model(name)


def _create_googlenet(num_classes: int, in_chans: int, aux_logits: bool = True, **kwargs: Any) -> nn.Module:
    from torchvision.models import googlenet

    if in_chans != 3:
        raise ConfigError(f"googlenet needs in_chans=3, got {in_chans}: set data.channels=3 (grey is repeated)")
    # init_weights=True: torchvision otherwise warns and picks scipy-based truncated normal init.
    return googlenet(weights=None, num_classes=num_classes, aux_logits=aux_logits, init_weights=True, **kwargs)


def create_network(name: str, num_classes: int, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """Build a network by name: ``googlenet`` from torchvision, anything else from timm's registry."""
    if name in TORCHVISION_NETWORKS:
        try:
            return _create_googlenet(num_classes, in_chans, **kwargs)
        except TypeError as err:
            raise ConfigError(f"model.network_kwargs: {name} does not accept {err}") from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, [*TORCHVISION_NETWORKS, *timm.list_models()], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"model.network: unknown network {name!r}{hint}")
    try:
        return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except ConfigError as err:
        raise ConfigError(f"model.network_kwargs: {err}") from None
    except TypeError as err:  # an unexpected keyword for this architecture
        raise ConfigError(f"model.network_kwargs: {name} does not accept {err}") from None
