"""Activation checkpointing: the same loss and gradients, fewer saved activations."""

import pytest
import torch

import futuretoken as ft
from conftest import tiny_config
from futuretoken.training.parallelize import apply_activation_checkpointing


def loss_grads_and_saved_bytes(model, tokens):
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    torch.manual_seed(0)  # dropout draws the same masks in both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.loss(tokens).total
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return loss.detach(), grads, sum(saved)


@pytest.mark.parametrize("which", ["decoder", "all"])
def test_checkpointing_keeps_results_and_saves_memory(which):
    model = ft.FTP(tiny_config(dropout=0.1))
    tokens = torch.randint(0, 64, (4, 32 + model.horizon))
    ref_loss, ref_grads, ref_bytes = loss_grads_and_saved_bytes(model, tokens)
    keys = set(model.state_dict())
    apply_activation_checkpointing(model, which)
    loss, grads, saved_bytes = loss_grads_and_saved_bytes(model, tokens)
    torch.testing.assert_close(loss, ref_loss)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-6, rtol=1e-5)
    assert saved_bytes < 0.7 * ref_bytes, (saved_bytes, ref_bytes)
    assert set(model.state_dict()) == keys  # checkpoints keep their parameter names


def test_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="activation_checkpointing='some'"):
        apply_activation_checkpointing(ft.GPT(tiny_config()), "some")


def test_training_benchmark_measures_one_variant():
    from futuretoken.bench.train import measure

    plain = measure("ftp", "tiny", 2, 1.0, "none", steps=1, warmup=1, compile=False, device_name="cpu")
    recomputed = measure("ftp", "tiny", 2, 1.0, "decoder", steps=1, warmup=1, compile=False, device_name="cpu")
    assert plain["tokens_per_s"] > 0 and plain["mfu"] is None  # no known peak for a CPU
    assert recomputed["saved_activation_bytes"] < 0.6 * plain["saved_activation_bytes"]


def test_training_benchmark_measures_the_sequential_head_backward():
    """MTP's sequential backward frees each head's activations during forward: at no moment does
    autograd hold them all, as the joint backward does. It holds a gradient buffer per head parameter
    instead, whatever the batch: at 4 sequences of the tiny preset the activations outweigh it (at 1,
    the two are of a size)."""
    from futuretoken.bench.train import measure

    rows = {b: measure("mtp", "tiny", 4, 1.0, "none", steps=1, warmup=0, compile=False, device_name="cpu",
                       mtp_backward=b) for b in ("sequential", "joint")}
    assert rows["sequential"]["mtp_backward"] == "sequential" and rows["sequential"]["tokens_per_s"] > 0
    assert rows["sequential"]["saved_activation_bytes"] < 0.5 * rows["joint"]["saved_activation_bytes"]
    assert rows["sequential"]["train_flops_per_token"] == rows["joint"]["train_flops_per_token"]  # nothing recomputed


def test_trainer_with_recomputed_decoder_gives_the_same_losses(data_dir, tmp_path):
    from conftest import run_config
    from futuretoken.training import train

    plain = train(run_config(data_dir, tmp_path / "plain", max_steps=4))
    recomputed = train(run_config(data_dir, tmp_path / "ac", max_steps=4, activation_checkpointing="decoder"))
    assert plain.losses == pytest.approx(recomputed.losses, rel=1e-5)
