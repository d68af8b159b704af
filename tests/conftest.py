import pytest
import torch

import futuretoken as ft


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def tiny_config(**overrides) -> ft.ModelConfig:
    base = dict(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, horizon=4,
                pseudo_len=3, dec_layer=2, dec_head=2)
    return ft.ModelConfig(**{**base, **overrides})


@pytest.fixture(params=["gpt", "ftp"])
def model(request):
    return ft.MODELS[request.param](tiny_config()).eval()
