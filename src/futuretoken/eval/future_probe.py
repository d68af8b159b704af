"""E2: how much of the future each model's h_t holds.

The same probe is trained on the frozen state vectors of either model: a fresh FTP
decoder (pseudo-sequence expansion + decoder blocks, the shape of the FTP config)
reading the frozen encoder's h_t, with the frozen token embedding as its input
embedding and tied head. Only the probe's own weights learn, for the same number
of steps on the same batches for both models; its validation loss at distance
k = 1..N says how well x_{t+k} can be read off h_t.
"""

from __future__ import annotations

import torch

from ..data import WindowSampler
from ..model import FTP, LanguageModel


def train_future_probe(model: LanguageModel, train_tokens, val_tokens, steps: int = 200, batch_size: int = 16,
                       lr: float = 2e-3, eval_batches: int = 10, seed: int = 0) -> dict[str, list[float] | float]:
    torch.manual_seed(seed)
    device = model.head_weight.device
    probe = FTP(model.config).to(device)
    probe.encoder.load_state_dict(model.encoder.state_dict())
    probe.encoder.requires_grad_(False)
    trainable = [p for p in probe.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    window = model.config.block_size + model.config.horizon
    train_sampler = WindowSampler(train_tokens, window, batch_size, seed)
    probe.train()
    probe.encoder.eval()  # frozen: no dropout either
    for step in range(steps):
        loss = probe.loss(train_sampler.batch(step).to(device)).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    probe.eval()
    val_sampler = WindowSampler(val_tokens, window, batch_size, seed + 1)
    with torch.no_grad():
        per_k = torch.stack([probe.loss(val_sampler.batch(i).to(device)).per_distance for i in range(eval_batches)])
    return {"per_distance": per_k.mean(0).tolist(), "probe_steps": steps}
