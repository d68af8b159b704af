"""The fast paths compute the same thing: torch.compile equals eager; bf16 autocast is close to fp32."""

import pytest
import torch

import futuretoken as ft
from conftest import tiny_config


@pytest.mark.parametrize("cls", [ft.FTP, ft.MTP, ft.MTPSeq])
def test_compiled_loss_and_gradients_equal_eager(device, cls):
    """MTP's sequential head backward (an autograd function that runs backward inside forward) included."""
    model = cls(tiny_config(block_size=16, n_layer=2 if cls is ft.MTP else 1, dec_layer=1)).to(device)
    tokens = torch.randint(0, 64, (2, 16 + model.horizon), device=device)
    compiled = torch.compile(model.loss)(tokens)
    compiled.total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    eager = model.loss(tokens)
    eager.total.backward()
    torch.testing.assert_close(compiled.total, eager.total, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(compiled.per_distance, eager.per_distance, atol=1e-6, rtol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, atol=1e-6, rtol=1e-5)


def test_bf16_autocast_loss_is_close_to_fp32(device):
    for cls in (ft.GPT, ft.FTP, ft.MTP, ft.MTPSeq):
        model = cls(tiny_config(vocab_size=512)).to(device)
        tokens = torch.randint(0, 512, (4, 32 + model.horizon), device=device)
        fp32 = model.loss(tokens)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            bf16 = model.loss(tokens)
            bf16.total.backward()
        assert abs(bf16.total.item() - fp32.total.item()) < 2e-2 * fp32.total.item()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_training_with_blocks_compiled_equals_eager(data_dir, tmp_path):
    """train.compile compiles block by block after activation checkpointing (training/parallelize.py):
    the same losses and weights as eager training, with FTP's decoder blocks recomputed in backward."""
    from conftest import run_config
    from futuretoken.training import Trainer

    runs = {}
    for compiled in (False, True):
        cfg = run_config(data_dir, tmp_path / str(compiled), "ftp", max_steps=3, ckpt_interval=3, eval_interval=3,
                         compile=compiled, activation_checkpointing="decoder")
        cfg.model.dropout = 0.0
        trainer = Trainer(cfg)
        losses = trainer.fit().losses
        blocks = [*trainer.model.encoder.blocks, *trainer.model.side_blocks()]
        assert all((b._compiled_call_impl is not None) == compiled for b in blocks)  # nn.Module.compile's mark
        trainer.close()
        runs[compiled] = (losses, ft.load(tmp_path / str(compiled)).state_dict())
    (eager_losses, eager), (compiled_losses, compiled) = runs[False], runs[True]
    torch.testing.assert_close(compiled_losses, eager_losses, atol=1e-5, rtol=1e-5)
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], atol=1e-5, rtol=1e-4)
