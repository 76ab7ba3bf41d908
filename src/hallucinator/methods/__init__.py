"""The self-supervised methods and their registry (the one list of method names the library has).

Each method class registers itself with :func:`register_method` (``methods/registry.py``); its defaults are
its constructor's. Importing this package imports every method module, so :data:`METHODS` holds them all.

Example:
    >>> from hallucinator import backbones, methods
    >>> method = methods.build("mocov2", backbones.build("resnet18", cifar_stem=True), hallucinator=True)
    >>> out = method(view1, view2)  # {"loss", "loss_original", "loss_hallucinated", "pos_similarity"}
"""

from __future__ import annotations

from hallucinator.methods.barlowtwins import BarlowTwins
from hallucinator.methods.base import SSLMethod
from hallucinator.methods.byol import BYOL
from hallucinator.methods.dino import DINO, DINOHead
from hallucinator.methods.moco import MoCo
from hallucinator.methods.mocov3 import MoCoV3
from hallucinator.methods.nnclr import NNCLR
from hallucinator.methods.registry import METHODS, MethodSpec, build, check_hparams, register_method
from hallucinator.methods.simclr import SimCLR
from hallucinator.methods.simsiam import SimSiam
from hallucinator.methods.vicreg import VICReg

METHOD_NAMES: tuple[str, ...] = tuple(sorted(METHODS))

__all__ = [
    "BYOL",
    "METHODS",
    "METHOD_NAMES",
    "NNCLR",
    "DINO",
    "BarlowTwins",
    "DINOHead",
    "MethodSpec",
    "MoCo",
    "MoCoV3",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "VICReg",
    "build",
    "check_hparams",
    "register_method",
]
