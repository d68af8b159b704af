"""What every model type shares: output types, the tied head, caches, parameter counts, the blocks beside the encoder."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..config import ModelConfig
from .blocks import KVCache, init_weights
from .encoder import Encoder
from .flops import encoder_forward_flops


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
        config.validate_for(self.model_type)
        self.config = config
        self.encoder = Encoder(config)

    @property
    def n_residual_layers(self) -> int:
        """Blocks adding to a residual stream on the deepest path: GPT-2's init scales their output
        projections by 1/sqrt(2 * this)."""
        return self.config.n_layer

    def _init_weights(self, module: nn.Module | None = None) -> None:
        """GPT-2 init of the whole model, or of one part a subclass adds after its parent's init."""
        init_weights(self if module is None else module, self.n_residual_layers)

    @property
    def head_weight(self) -> Tensor:
        """(V_padded, d) output head, tied to the token embedding (rows past vocab_size are padding)."""
        return self.encoder.wte.weight

    def head(self, features: Tensor) -> Tensor:
        """(..., d) -> (..., V) logits over the real vocabulary: padded rows are never predicted."""
        return (features @ self.head_weight.T)[..., : self.config.vocab_size]

    @staticmethod
    def forward_flops_per_token(c: ModelConfig) -> float:
        """Forward FLOPs per input token, counted as model/flops.py explains (the GPT baseline here)."""
        return encoder_forward_flops(c) + 2 * c.n_embd * c.padded_vocab_size

    def side_blocks(self) -> list[nn.Module]:
        """The transformer blocks this model type runs beside its encoder (FTP's decoder, MTP's heads
        2..N, MTP-seq's modules): what activation checkpointing "decoder" recomputes."""
        return []

    def sharded_blocks(self) -> list[nn.Module]:
        """The blocks FSDP shards one by one; every other parameter stays in the root group."""
        return list(self.encoder.blocks)

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
