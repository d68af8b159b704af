"""The next-token baseline: the shared encoder and a head tied to the token embedding."""

from __future__ import annotations

from torch import Tensor

from ..config import ModelConfig
from .base import LanguageModel, ModelOutput
from .blocks import KVCache
from .loss import LossOutput, future_loss


class GPT(LanguageModel):
    model_type = "gpt"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self._init_weights(config.n_layer)

    @property
    def horizon(self) -> int:
        return 1

    def forward(self, idx: Tensor | None, cache: list[KVCache] | None = None, keep: int = 0,
                **encoder_args) -> ModelOutput:
        """idx: (B, T) -> h (B, T, d) and next-token logits of the last `keep` positions (B, keep or T, V).

        keep: 0 for every position. encoder_args: positions, key_padding_mask, embeds, trace (Encoder.forward).
        """
        h = self.encoder(idx, cache, **encoder_args)  # (B, T, d)
        return ModelOutput(hidden=h, logits=self.head(h[:, -keep:]))  # (B, T or keep, V)

    def loss(self, tokens: Tensor) -> LossOutput:
        """tokens: (B, T + 1). Next-token cross-entropy; per_distance has one entry."""
        c = self.config
        h = self.encoder(tokens[:, :-1])  # (B, T, d)
        targets = tokens[:, 1:].reshape(-1, 1)  # (B*T, 1)
        return future_loss(h.reshape(-1, 1, c.n_embd), self.head_weight, targets, 1.0, c.loss_chunk, c.vocab_size,
                           c.loss_impl)
