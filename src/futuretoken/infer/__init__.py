"""Inference: sampling settings, generation strategies (ar, rollout, speculative), embeddings."""

from .embed import embed
from .generate import GenerationResult, GenerationStats, generate
from .sampling import SamplingConfig, probs, sample

__all__ = ["GenerationResult", "GenerationStats", "SamplingConfig", "embed", "generate", "probs", "sample"]
