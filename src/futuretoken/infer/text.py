"""Text in, text out, with the tokenizer a loaded model carries (`ft.load` attaches the run's)."""

from __future__ import annotations

from collections.abc import Sequence

from .generate import batches_by_similar_length, generate


def tokenizer_of(model):
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("this model has no tokenizer attached; load it with futuretoken.load(run) "
                         "or pass token ids instead of text")
    return tokenizer


def generate_text(model, prompt: str | Sequence[str], max_new_tokens: int = 100, batch_size: int = 32,
                  **kwargs) -> str | list[str]:
    """Continue text prompts: prompt + continuation, decoded. A str gives a str, a list a list.

    Prompts are batched by similar length (left-padded). kwargs: strategy, sampling, draft_len,
    generator (see futuretoken.generate).
    """
    tokenizer = tokenizer_of(model)
    texts = [prompt] if isinstance(prompt, str) else list(prompt)
    ids = tokenizer.encode_batch(texts)
    outputs = [""] * len(texts)
    for group in batches_by_similar_length([len(t) for t in ids], batch_size):
        result = generate(model, [ids[i] for i in group], max_new_tokens, **kwargs)
        for i, row in zip(group, result.rows()):
            outputs[i] = tokenizer.decode(row)
    return outputs[0] if isinstance(prompt, str) else outputs
