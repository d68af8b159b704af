"""Future Token Prediction: encoder -> h_t -> pseudo-sequence -> small decoder predicting N tokens.

The decoder's only view of the past is h_t: it self-attends to its own
teacher-forced inputs x_t .. x_{t+N-1} and cross-attends to the P vectors that
h_t is linearly expanded into. Output k predicts x_{t+k}.

`decoder_start = "learned"` replaces the first input x_t by a learned vector: the decoder
then cannot read the current token from its own input, so h_t has to carry it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .base import LanguageModel, ModelOutput
from .blocks import Block, KVCache
from .flops import encoder_forward_flops
from .loss import LossOutput, future_loss, future_targets

CrossKV = list[tuple[Tensor, Tensor]]  # per decoder layer: cross-attention keys, values (M, H, P, hd)


class FTP(LanguageModel):
    model_type = "ftp"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if config.dec_layer == 0 and config.horizon != 1:
            raise ValueError(f"dec_layer=0 (no decoder) only works with horizon=1, got horizon={config.horizon}")
        d, P = config.n_embd, config.pseudo_len
        self.expand = nn.Linear(d, P * d, bias=config.bias)
        self.dec_wpe = nn.Embedding(config.horizon, d)
        self.dec_start = nn.Parameter(torch.zeros(d)) if config.decoder_start == "learned" else None
        self.dec_drop = nn.Dropout(config.dropout)
        self.dec_blocks = nn.ModuleList(
            Block(d, config.dec_head, config.bias, config.dropout, cross=True) for _ in range(config.dec_layer)
        )
        self.dec_ln = nn.LayerNorm(d, bias=config.bias)
        self._init_weights()

    @property
    def n_residual_layers(self) -> int:
        return self.config.n_layer + self.config.dec_layer

    @property
    def horizon(self) -> int:
        return self.config.horizon

    # --- decoder -------------------------------------------------------------------------
    @staticmethod
    def forward_flops_per_token(c: ModelConfig) -> float:
        d, V, N, P, Ld = c.n_embd, c.padded_vocab_size, c.horizon, c.pseudo_len, c.dec_layer
        if Ld == 0:  # no decoder: h_t goes straight to the head
            return encoder_forward_flops(c) + 2 * d * V
        per_decoder_token = Ld * (28 * d * d + 4 * N * d + 4 * P * d) + 2 * d * V
        per_position = Ld * 4 * P * d * d + N * per_decoder_token  # cross K/V of P vectors, N decoder tokens
        return encoder_forward_flops(c) + 2 * d * P * d + c.decoder_fraction * per_position

    def side_blocks(self) -> list[nn.Module]:
        return list(self.dec_blocks)  # (their cross-attention keys come from outside them: they stay unsharded)

    def cross_kv(self, h: Tensor) -> CrossKV:
        """h: (M, d) state vectors -> per-layer cross-attention keys/values of their pseudo-sequences."""
        M, d = h.shape
        pseudo = self.expand(h).view(M, self.config.pseudo_len, d)  # (M, P, d)
        return [block.cross.keys_values(pseudo) for block in self.dec_blocks]

    def new_decoder_cache(self, batch: int, *, device=None, dtype=None) -> list[KVCache]:
        c, w = self.config, self.head_weight
        return [
            KVCache(batch, c.dec_head, c.horizon, c.n_embd // c.dec_head,
                    device=device or w.device, dtype=dtype or w.dtype)
            for _ in self.dec_blocks
        ]

    def decode(self, inputs: Tensor, cross_kv: CrossKV, h: Tensor | None = None,
               cache: list[KVCache] | None = None) -> Tensor:
        """inputs: (M, n) decoder tokens (x_t, x_{t+1}, ...), or their embeddings (M, n, d)
        -> features (M, n, d) after the final norm.

        With `cache`, inputs continue the cached decoder steps. `h` (M, d) is only used
        when the model has no decoder layers (then the prediction is read from h_t, as GPT does).
        """
        if not self.dec_blocks:
            return h[:, None, :].expand(-1, inputs.shape[1], -1)
        start = cache[0].length if cache else 0
        n = inputs.shape[1]
        if start + n > self.config.horizon:
            raise ValueError(f"decoder asked for steps {start}..{start + n - 1}; it has horizon {self.config.horizon}")
        pos = torch.arange(start, start + n, device=inputs.device)
        tok = inputs if inputs.is_floating_point() else self.encoder.wte(inputs)  # (M, n, d)
        if self.dec_start is not None and start == 0:  # step 1 reads the start vector, not x_t
            tok = torch.cat([self.dec_start.expand(tok.shape[0], 1, -1), tok[:, 1:]], dim=1)
        x = self.dec_drop(tok + self.dec_wpe(pos))  # (M, n, d)
        for i, block in enumerate(self.dec_blocks):
            x = block(x, cache=cache[i] if cache else None, cross_kv=cross_kv[i])
        return self.dec_ln(x)

    # --- model API -----------------------------------------------------------------------
    def forward(self, idx: Tensor | None, cache: list[KVCache] | None = None, keep: int = 0,
                **encoder_args) -> ModelOutput:
        """idx: (B, T) -> h (B, T, d) and next-token logits from decoder output k = 1 at the last
        `keep` positions (B, keep or T, V); keep = 0: every position.

        encoder_args: positions, key_padding_mask, embeds, trace (Encoder.forward). With `embeds`,
        decoder step 1 takes them as its input embeddings (the decoder shares the token embedding).
        """
        hidden = self.encoder(idx, cache, **encoder_args)  # (B, T, d)
        h = hidden[:, -keep:]  # (B, T', d)
        embeds = encoder_args.get("embeds")
        inputs = idx[:, -keep:] if embeds is None else embeds[:, -keep:]  # (B, T') or (B, T', d)
        B, T = h.shape[:2]
        flat_h = h.reshape(B * T, -1)
        step1 = inputs.reshape(B * T, 1, *inputs.shape[2:])  # (B*T, 1) or (B*T, 1, d)
        features = self.decode(step1, self.cross_kv(flat_h), flat_h)  # (B*T, 1, d)
        return ModelOutput(hidden=hidden, logits=self.head(features[:, 0]).view(B, T, -1))

    def loss(self, tokens: Tensor) -> LossOutput:
        """tokens: (B, T + N) -> gamma-weighted loss over the N future tokens of every position."""
        c = self.config
        N = c.horizon
        h = self.encoder(tokens[:, :-N])  # (B, T, d)
        B, T, d = h.shape
        inputs, targets = future_targets(tokens, N, c.eot_token)  # (B, T, N) each
        h, inputs, targets = h.reshape(B * T, d), inputs.reshape(B * T, N), targets.reshape(B * T, N)
        if self.training and c.decoder_fraction < 1.0:
            # Train the decoder on a random subset of positions; the encoder still sees all.
            keep = torch.randperm(B * T, device=h.device)[: max(1, round(c.decoder_fraction * B * T))]
            h, inputs, targets = h[keep], inputs[keep], targets[keep]
        features = self.decode(inputs, self.cross_kv(h), h)  # (M, N, d)
        return future_loss(features, self.head_weight, targets, c.gamma, c.loss_chunk, c.vocab_size, c.loss_impl)
