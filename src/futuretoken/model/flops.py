"""Training FLOPs per token, counted from the matmul shapes (FTP's decoder, MTP's heads and modules included).

Convention (as in the PaLM paper and nanoGPT): a matmul of (m, k) by (k, n) costs
2*m*k*n forward and twice that backward, so training costs 3x forward. Attention
scores and their weighted sum cost 2 * 2 * q_len * kv_len * d forward per layer
(counted over the full, unmasked square, the usual MFU convention). Norms,
softmax and elementwise work are ignored. Per token of the encoder's input:

  encoder   = L * (24 d^2 + 4 T d)                 # qkv+proj 8d^2, MLP 16d^2 ; scores
  GPT head  = 2 d V
  FTP       = encoder + 2 d (P d)                  # expansion into the pseudo-sequence
            + f * [ L_dec * 4 P d^2                # cross-attention keys/values of P vectors
                    + N * (L_dec * (8 d^2 + 4 d^2 + 16 d^2)   # self qkv+proj, cross q+proj, MLP
                           + L_dec * (4 N d + 4 P d)          # self and cross scores
                           + 2 d V) ]                         # head on every decoder output
  MTP       = encoder + (N-1) * (24 d^2 + 4 T d)   # heads 2..N: one block each (head 1 is the encoder's last)
            + N * 2 d V                            # the unembedding under every head
  MTP-seq   = encoder + 2 d V
            + (N-1) * (4 d^2 + 24 d^2 + 4 T d      # module k: projection 2d -> d, one block
                       + 2 d V)                     # and the head
  training  = 3 * forward                          # MTP's sequential backward recomputes nothing
with f the share of positions that go through the decoder (decoder_fraction) and V the padded
vocabulary (the embedding's rows, ModelConfig.padded_vocab_size), as nanoGPT counts it.
"""

from __future__ import annotations

from ..config import MODEL_TYPES, ModelConfig


def block_forward_flops(c: ModelConfig) -> float:
    """One pre-norm block over a sequence of block_size: qkv + proj 8 d^2, MLP 16 d^2, scores 4 T d."""
    d, T = c.n_embd, c.block_size
    return 24 * d * d + 4 * T * d


def encoder_forward_flops(c: ModelConfig) -> float:
    return c.n_layer * block_forward_flops(c)


def forward_flops_per_token(c: ModelConfig, model_type: str) -> float:
    d, V, block = c.n_embd, c.padded_vocab_size, block_forward_flops(c)
    if model_type == "gpt":
        return encoder_forward_flops(c) + 2 * d * V
    if model_type == "mtp":
        return encoder_forward_flops(c) + (c.horizon - 1) * block + c.horizon * 2 * d * V
    if model_type == "mtp_seq":
        return encoder_forward_flops(c) + 2 * d * V + (c.horizon - 1) * (4 * d * d + block + 2 * d * V)
    if model_type != "ftp":
        raise ValueError(f"unknown model type '{model_type}'; expected one of {', '.join(MODEL_TYPES)}")
    N, P, Ld = c.horizon, c.pseudo_len, c.dec_layer
    if Ld == 0:  # no decoder: h_t goes straight to the head
        return encoder_forward_flops(c) + 2 * d * V
    per_decoder_token = Ld * (28 * d * d + 4 * N * d + 4 * P * d) + 2 * d * V
    per_position = Ld * 4 * P * d * d + N * per_decoder_token
    return encoder_forward_flops(c) + 2 * d * P * d + c.decoder_fraction * per_position


def training_flops_per_token(c: ModelConfig, model_type: str) -> float:
    """Forward + backward FLOPs per input token (3x forward)."""
    return 3 * forward_flops_per_token(c, model_type)
