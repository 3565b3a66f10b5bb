"""Detector architectures: the name table and the factory."""

from dfdetect.models.registry import MODELS, PAPER_MODELS, UnknownModelError, get_spec, list_models

__all__ = ["MODELS", "PAPER_MODELS", "UnknownModelError", "get_spec", "list_models"]
