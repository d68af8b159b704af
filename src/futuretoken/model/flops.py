"""Training FLOPs per token, counted from the matmul shapes (FTP's decoder, MTP's heads and modules included).

Each model class counts its own forward (`forward_flops_per_token`) from the helpers here;
`futuretoken.model.training_flops_per_token(config, model_type)` looks the class up.

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

from ..config import ModelConfig


def block_forward_flops(c: ModelConfig) -> float:
    """One pre-norm block over a sequence of block_size: qkv + proj 8 d^2, MLP 16 d^2, scores 4 T d."""
    d, T = c.n_embd, c.block_size
    return 24 * d * d + 4 * T * d


def encoder_forward_flops(c: ModelConfig) -> float:
    return c.n_layer * block_forward_flops(c)
