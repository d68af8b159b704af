"""What `futuretoken generate` and `futuretoken embed` do once their arguments are parsed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_model, output_dir
from ..config import SEED_MAX
from .embed import embed
from .generate import batches_by_similar_length, generate
from .sampling import SamplingConfig
from .text import tokenizer_of


def _load(run: str, device: str):
    model = load_model(run, device)
    return model, tokenizer_of(model)


class _Streamer:
    """Prints a single prompt's continuation as tokens are committed (decoding the whole
    continuation each time, since one token may end halfway through a character)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.ids, self.printed = tokenizer, [], ""

    def __call__(self, new_tokens: torch.Tensor) -> None:  # (1, j)
        self.ids += new_tokens[0].tolist()
        text = self.tokenizer.decode(self.ids)
        sys.stdout.write(text[len(self.printed):])
        sys.stdout.flush()
        self.printed = text


def generate_command(args, prompts: list[str]) -> None:
    # Checked before the model loads: range(0, n, 0) fails and a negative step generates nothing.
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} is invalid: give the number of prompts generated "
                         "together, an integer >= 1")
    if not 0 <= args.seed <= SEED_MAX:
        raise ValueError(f"--seed {args.seed} is outside [0, {SEED_MAX}] (0 to 2**63 - 1); give a seed in that range")
    model, tokenizer = _load(args.run, args.device)
    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    generator = torch.Generator(device=model.head_weight.device).manual_seed(args.seed)
    encoded = [tokenizer.encode(p) for p in prompts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"{_prompt_name(args, i)} is empty after tokenisation; give some text")
    _check_room(args, encoded, model.config.block_size)
    outputs: dict[int, str] = {}
    single = len(prompts) == 1
    for group in batches_by_similar_length([len(ids) for ids in encoded], args.batch_size):
        if single:
            sys.stdout.write(prompts[0])
        result = generate(model, [encoded[i] for i in group], args.max_new_tokens,
                          strategy=args.strategy, sampling=sampling, draft_len=args.draft_len,
                          generator=generator, stream=_Streamer(tokenizer) if single else None)
        s = result.stats
        accepted = f", {s.acceptance_rate:.0%} of drafted tokens accepted" if s.acceptance_rate is not None else ""
        print(f"\n[{args.strategy}] {s.new_tokens} tokens x {len(group)} prompts, {s.tokens_per_s:.1f} tokens/s, "
              f"{s.tokens_per_encoder_pass:.2f} tokens per encoder pass{accepted}", file=sys.stderr)
        for i, row in zip(group, result.rows()):
            outputs[i] = tokenizer.decode(row)
    if len(prompts) > 1:
        for i in range(len(prompts)):
            print(f"=== prompt {i}\n{outputs[i]}")


def _prompt_name(args, i: int) -> str:
    """How an error names prompt i: its number as in the output, and its line in --prompts-file
    (read_texts keeps one prompt per line, so prompt i is line i + 1)."""
    return f"prompt {i} (line {i + 1} of {args.prompts_file})" if args.prompts_file else f"prompt {i}"


def _check_room(args, encoded: list[list[int]], block_size: int) -> None:
    """Every prompt must leave room for a new token (there is no sliding window): checked for all of
    them before any is generated, so an error names every prompt at fault and wastes no work."""
    if args.max_new_tokens <= 0:
        return
    long = [i for i, ids in enumerate(encoded) if len(ids) >= block_size]
    if long:
        named = "; ".join(f"{_prompt_name(args, i)} has {len(encoded[i])} tokens" for i in long[:5])
        more = f" ({len(long) - 5} more)" if len(long) > 5 else ""
        raise ValueError(f"{named}{more}, but the model's block_size is {block_size} and leaves no room for new "
                         f"tokens (no sliding window). Fix: shorten each to fewer than {block_size} tokens, "
                         f"e.g. {max(1, block_size - args.max_new_tokens)} to leave room for --max-new-tokens")


def output_path(out: str, pool: str) -> Path:
    """The file embed writes: --out itself when it ends in the format's suffix (.parquet, .npz for
    pool "tokens", else .npy), otherwise --out with that suffix added (numpy's own rule)."""
    path = Path(out)
    suffix = ".parquet" if path.suffix == ".parquet" else ".npz" if pool == "tokens" else ".npy"
    return path if path.suffix == suffix else path.with_name(path.name + suffix)


def embed_command(args, texts: list[str]) -> None:
    out = output_path(args.out, args.pool)
    output_dir(out.parent, "--out folder")  # before the work, not after it; never into RUN/checkpoints/
    model, tokenizer = _load(args.run, args.device)
    vectors = embed(model, tokenizer.encode_batch(texts), pool=args.pool, batch_size=args.batch_size)
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = vectors if args.pool == "tokens" else list(vectors)
        table = pa.table({"text": texts, "embedding": [np.asarray(v).tolist() for v in rows]})
        pq.write_table(table, out)
    else:  # through a file object: numpy then writes exactly `out`
        with open(out, "wb") as f:
            if args.pool == "tokens":
                np.savez(f, *vectors)
            else:
                np.save(f, vectors)
    shape = f"{len(vectors)} texts" if args.pool == "tokens" else f"array {tuple(vectors.shape)}"
    print(f"wrote {shape} to {out}", file=sys.stderr)
