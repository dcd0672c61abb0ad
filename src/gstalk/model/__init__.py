"""Gaussians and the networks that move and colour them."""

from .gaussians import GaussianSet, ModelRegion, Splats
from .hash_encoder import TriplaneHashEncoder
from .talking_head import Condition, ModelConfig, TalkingHead, render_portrait

__all__ = [
    "Condition",
    "GaussianSet",
    "ModelConfig",
    "ModelRegion",
    "Splats",
    "TalkingHead",
    "TriplaneHashEncoder",
    "render_portrait",
]
