import numpy as np
import pytest
import torch

import futuretoken as ft
from futuretoken.infer import embed, encode


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny ops: a second intra-op thread only adds synchronisation (and stalls on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(cls=ft.FTP, block_size: int = 64):
    return cls(ft.ModelConfig(vocab_size=32, block_size=block_size, n_layer=2, n_head=2, n_embd=32,
                              horizon=4, pseudo_len=3, dec_layer=1, dec_head=2)).eval()


def encoder_states(model, tokens) -> np.ndarray:
    """Reference: the encoder on one unpadded sequence. (len, d)"""
    with torch.no_grad():
        return model.encoder(torch.tensor([tokens]))[0].numpy()


def texts(seed: int, lengths) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 32, n).tolist() for n in lengths]


@pytest.mark.parametrize("cls", [ft.FTP, ft.GPT])
def test_vectors_do_not_depend_on_the_batch(cls):
    model = tiny(cls)
    batch = texts(0, [5, 17, 1, 40, 9, 23, 64])
    for pool in ("mean", "last"):
        together = embed(model, batch, pool=pool, batch_size=3)  # padded, mixed lengths
        alone = np.stack([embed(model, [t], pool=pool)[0] for t in batch])
        assert together.shape == (len(batch), 32) and together.dtype == np.float32
        np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)
    tokens = embed(model, batch, pool="tokens", batch_size=2)
    for t, vectors in zip(batch, tokens):
        np.testing.assert_allclose(vectors, encoder_states(model, t), atol=1e-5, rtol=0)
    np.testing.assert_allclose(embed(model, batch, "mean"), np.stack([v.mean(0) for v in tokens]), atol=1e-5)
    np.testing.assert_allclose(embed(model, batch, "last"), np.stack([v[-1] for v in tokens]), atol=1e-5)
    weights = [np.arange(1, len(v) + 1) for v in tokens]  # SGPT: token i (1-based) weighs i
    np.testing.assert_allclose(embed(model, batch, "weighted_mean"),
                               np.stack([w @ v / w.sum() for w, v in zip(weights, tokens)]), atol=1e-5)


@pytest.mark.parametrize("pool", ["mean", "last", "weighted_mean"])
def test_encode_pools_and_normalizes(pool):
    model = tiny()
    batch = texts(2, [3, 30, 8])
    raw = encode(model, batch, pool=pool, batch_size=2)
    np.testing.assert_allclose(raw, embed(model, batch, pool=pool), atol=1e-6)
    unit = encode(model, batch, pool=pool, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(ValueError, match="one vector per text"):
        encode(model, batch, pool="tokens")


@pytest.mark.parametrize("window", [None, 7])
def test_long_texts_use_sliding_windows(window):
    model = tiny(block_size=16)
    W = window or 16
    S = W // 2
    long = texts(1, [53])[0]
    vectors = embed(model, [long, long[:5]], pool="tokens", window=window)[0]
    assert vectors.shape == (53, 32)
    for i in range(53):
        # The owning window is the first one that contains token i: the most left context.
        start = max(0, -(-(i - W + 1) // S)) * S
        assert start <= i < start + W and (start == 0 or i - start >= W - S)
        np.testing.assert_allclose(vectors[i], encoder_states(model, long[start : start + W])[i - start], atol=1e-5)
    np.testing.assert_allclose(embed(model, [long], "last", window=window)[0], vectors[-1], atol=1e-5)
    np.testing.assert_allclose(embed(model, [long], "mean", window=window)[0], vectors.mean(0), atol=1e-5)


def test_embed_errors():
    model = tiny(block_size=16)
    with pytest.raises(ValueError, match="pool='max' is unknown"):
        embed(model, [[1, 2]], pool="max")
    with pytest.raises(ValueError, match="text 1 is empty"):
        embed(model, [[1], []])
    with pytest.raises(ValueError, match="window=17"):
        embed(model, [[1]], window=17)
    with pytest.raises(ValueError, match=r"outside \[0, 32\)"):
        embed(model, [[1, 40]])
    with pytest.raises(ValueError, match="batch_size"):
        embed(model, [[1]], batch_size=0)
