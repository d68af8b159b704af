"""What GPT and FTP share: output types, the tied head, caches and counting."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .blocks import KVCache, init_weights
from .encoder import Encoder


@dataclass
class ModelOutput:
    hidden: Tensor  # (B, T, d) per-token state vectors h_t, after the encoder's final norm
    logits: Tensor  # (B, T, V) next-token logits


class LanguageModel(nn.Module):
    """Encoder + tied output head; subclasses define how h_t becomes predictions."""

    model_type: str = ""
    tokenizer = None  # attached by futuretoken.load when the run folder has one: enables text in/out

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config)

    def _init_weights(self, n_residual_layers: int) -> None:
        init_weights(self, n_residual_layers)

    @property
    def head_weight(self) -> Tensor:
        """(V, d) output head, tied to the token embedding."""
        return self.encoder.wte.weight

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

    # --- conveniences over futuretoken.infer (text in, text out when a tokenizer is attached) ---
    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer attached; load it with futuretoken.load(run) "
                             "or pass token ids instead of text")
        return [self.tokenizer.encode(t) for t in texts]

    def generate(self, prompt, max_new_tokens: int = 100, **kwargs):
        """Continue a prompt. Text (str or list of str) gives text back (prompt + continuation);
        token ids (LongTensor (B, t) or lists) give a GenerationResult. kwargs: strategy,
        sampling, draft_len, generator, stream (see futuretoken.infer.generate)."""
        from ..infer import generate

        if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], str)):
            texts = [prompt] if isinstance(prompt, str) else prompt
            outputs = []
            for ids in self._encode_texts(texts):  # one by one: prompts may differ in length
                result = generate(self, torch.tensor([ids], device=self.head_weight.device), max_new_tokens, **kwargs)
                outputs.append(self.tokenizer.decode(result.tokens[0].tolist()))
            return outputs[0] if isinstance(prompt, str) else outputs
        return generate(self, prompt, max_new_tokens, **kwargs)

    def embed(self, texts, pool: str = "mean", **kwargs):
        """Embeddings of texts (list of str, needs a tokenizer) or of token-id lists; see futuretoken.infer.embed."""
        from ..infer import embed

        if texts and isinstance(texts[0], str):
            texts = self._encode_texts(list(texts))
        return embed(self, texts, pool=pool, **kwargs)
