"""The paper's experiments (E1-E7), their statistics and reports."""

from .smoothness import adjacent_cosine, smoothness_stats

__all__ = ["adjacent_cosine", "smoothness_stats"]
