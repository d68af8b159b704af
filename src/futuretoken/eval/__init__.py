from .smoothness import adjacent_cosine, smoothness

__all__ = ["adjacent_cosine", "smoothness"]
