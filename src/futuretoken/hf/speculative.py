"""FTP self-speculative decoding from transformers' `generate`, as a `custom_generate` decoding loop:

    from futuretoken.hf import speculative_decoding
    out = model.generate(**tok(prompts, return_tensors="pt", padding=True), max_new_tokens=40,
                         custom_generate=speculative_decoding, draft_len=4)   # do_sample=False: == greedy

transformers prepares the inputs (left padding, attention mask, lengths, eos/pad ids) and hands them
here; futuretoken's `generate(strategy="speculative")` does the decoding (its module docstring says why
greedy output equals plain greedy search and sampled output has the model's distribution).
Sampling honours temperature, top_k and top_p; other logits processors are refused rather than ignored.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers.generation import GenerateDecoderOnlyOutput

from futuretoken.infer import SamplingConfig, generate

# Generation settings whose logits processors the speculative loop does not apply, with their neutral value.
UNSUPPORTED = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None, "min_new_tokens": None,
               "num_beams": 1, "guidance_scale": None, "sequence_bias": None, "suppress_tokens": None}


def speculative_decoding(model, input_ids: Tensor, logits_processor=None, stopping_criteria=None,
                         generation_config=None, synced_gpus: bool = False, streamer=None,
                         draft_len: int | None = None, **model_kwargs: Any):
    """transformers `custom_generate` callable for FTPForCausalLM; draft_len: tokens per draft (default horizon)."""
    if getattr(model.config, "ft_model_type", "") != "ftp":
        raise ValueError(f"speculative decoding drafts with FTP's future-token decoder; {type(model).__name__} "
                         "has none: use plain generate()")
    gc = generation_config
    unsupported = [k for k, neutral in UNSUPPORTED.items() if getattr(gc, k, neutral) not in (neutral, None)]
    if unsupported:
        raise ValueError(f"speculative decoding applies temperature, top_k and top_p only; unset {unsupported} "
                         "or use plain generate()")
    sampling = SamplingConfig(temperature=0.0)
    if gc.do_sample:
        sampling = SamplingConfig(temperature=gc.temperature if gc.temperature is not None else 1.0,
                                  top_k=gc.top_k or None, top_p=gc.top_p if gc.top_p not in (None, 1.0) else None)
    B, t = input_ids.shape
    result = generate(model.model, input_ids, gc.max_length - t, "speculative", sampling, draft_len,
                      attention_mask=model_kwargs.get("attention_mask"))
    new = result.tokens[:, t:]  # (B, n)
    eos = gc.eos_token_id
    if eos is not None and new.shape[1] > 0:  # transformers' rule: after a row's eos, pad; stop when all rows ended
        is_eos = torch.isin(new, torch.as_tensor(eos, device=new.device).reshape(-1))
        ended = (is_eos.long().cumsum(1) - is_eos.long()) > 0  # (B, n): an eos came before
        new = new.masked_fill(ended, gc.pad_token_id if gc.pad_token_id is not None else 0)
        if bool(is_eos.any(1).all()):
            new = new[:, : int(is_eos.long().argmax(1).max()) + 1]
    sequences = torch.cat([input_ids, new], 1)  # (B, t + n)
    if streamer is not None:
        streamer.put(new.cpu())
        streamer.end()
    return GenerateDecoderOnlyOutput(sequences=sequences) if gc.return_dict_in_generate else sequences
