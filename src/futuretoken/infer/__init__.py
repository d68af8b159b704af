"""Inference: sampling settings, generation strategies (ar, rollout, speculative), embeddings, text in/out."""

from .embed import embed, encode
from .generate import GenerationResult, GenerationStats, batches_by_length, batches_by_similar_length, generate
from .sampling import SamplingConfig, probs, sample
from .text import generate_text, tokenizer_of

__all__ = ["GenerationResult", "GenerationStats", "SamplingConfig", "batches_by_length", "batches_by_similar_length",
           "embed", "encode", "generate", "generate_text", "probs", "sample", "tokenizer_of"]
