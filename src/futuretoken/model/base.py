"""What GPT and FTP share: output types, the tied head, caches and counting."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..config import ModelConfig
from .blocks import KVCache, init_weights
from .encoder import Encoder


@dataclass
class ModelOutput:
    hidden: Tensor  # (B, T, d) per-token state vectors h_t, after the encoder's final norm
    logits: Tensor  # (B, T, V) next-token logits (of the last `keep` positions when asked)


class LanguageModel(nn.Module):
    """Encoder + tied output head; subclasses define how h_t becomes predictions."""

    model_type: str = ""
    tokenizer = None  # attached by futuretoken.load when the run folder has one: lets infer take text

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config)

    def _init_weights(self, n_residual_layers: int) -> None:
        init_weights(self, n_residual_layers)

    @property
    def head_weight(self) -> Tensor:
        """(V_padded, d) output head, tied to the token embedding (rows past vocab_size are padding)."""
        return self.encoder.wte.weight

    def head(self, features: Tensor) -> Tensor:
        """(..., d) -> (..., V) logits over the real vocabulary: padded rows are never predicted."""
        return (features @ self.head_weight.T)[..., : self.config.vocab_size]

    @property
    def horizon(self) -> int:
        """How many tokens past the block `loss` needs: tokens are (B, T + horizon)."""
        raise NotImplementedError

    def new_cache(self, batch: int, max_len: int | None = None, **kwargs) -> list[KVCache]:
        return self.encoder.new_cache(batch, max_len, **kwargs)

    def num_parameters(self, exclude_positions: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_positions:
            n -= sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Embedding) and m is not self.encoder.wte)
        return n
