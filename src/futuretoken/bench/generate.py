"""`futuretoken bench generate`: tokens/s of ar, rollout and speculative, batch 1 and 8.

Prompts are openings of validation windows; decoding is greedy so that the three
strategies produce comparable work and speculative can be checked against ar.
Each setting runs once to warm up, then `repeats` times, the strategies taking turns (so a
load that comes and goes on a shared machine touches them alike); the median is reported.
"""

from __future__ import annotations

import statistics

import torch

from ..infer import SamplingConfig, generate
from ..infer.drafters import DRAFTERS
from .env import environment


def spread_prompts(tokens, prompt_tokens: int, n: int = 8) -> torch.Tensor:
    """(n, prompt_tokens) prompts: the openings of n evenly spaced stretches of a token split."""
    most = len(tokens) // n
    if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or not 1 <= prompt_tokens <= most:
        raise ValueError(f"prompt_tokens={prompt_tokens!r} is invalid: give an integer in 1..{most} "
                         f"({n} prompts from a split of {len(tokens)} tokens)")
    return torch.tensor([tokens[i * most : i * most + prompt_tokens].tolist() for i in range(n)])


def bench_generate(model, prompts: torch.Tensor, max_new_tokens: int, batch_sizes=(1, 8),
                   repeats: int = 3) -> dict:
    """prompts: (n, t) token ids, n >= max(batch_sizes)."""
    for name, value in (("max_new_tokens", max_new_tokens), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid: give an integer >= 1")
    device = model.head_weight.device
    strategies = ["ar"] + (["rollout", "speculative"] if model.model_type in DRAFTERS else [])
    greedy = SamplingConfig(temperature=0.0)
    rows = []
    for batch in batch_sizes:
        ids = prompts[:batch].to(device)
        reference = None
        runs = {strategy: [] for strategy in strategies}
        for turn in range(repeats + 1):
            for strategy in strategies:
                result = generate(model, ids, max_new_tokens, strategy=strategy, sampling=greedy)
                if turn > 0:  # turn 0 warms up
                    runs[strategy].append(result)
        for strategy in strategies:
            stats = [r.stats for r in runs[strategy]]
            row = {"strategy": strategy, "batch": batch, "new_tokens": stats[0].new_tokens,
                   "tokens_per_s": statistics.median(s.tokens_per_s for s in stats),
                   "tokens_per_encoder_pass": stats[0].tokens_per_encoder_pass,
                   "acceptance_rate": stats[0].acceptance_rate}
            if strategy == "ar":
                reference = runs[strategy][0].tokens
            elif strategy == "speculative":
                row["identical_to_ar"] = bool(torch.equal(runs[strategy][0].tokens, reference))
            rows.append(row)
        ar_speed = next(r["tokens_per_s"] for r in rows if r["batch"] == batch and r["strategy"] == "ar")
        for r in rows:
            if r["batch"] == batch:
                r["speedup_vs_ar"] = r["tokens_per_s"] / ar_speed
    return {"benchmark": "generate", **environment(device), "model_type": model.model_type,
            "parameters": model.num_parameters(), "prompt_tokens": prompts.shape[1],
            "max_new_tokens": max_new_tokens, "repeats": repeats, "results": rows}


def format_table(result: dict) -> str:
    lines = [f"generation benchmark on {result['device']} (torch {result['torch']}), "
             f"{result['model_type'].upper()} {result['parameters']:,} parameters",
             "strategy     batch  tokens/s  speed-up  tokens/encoder pass  identical"]
    for r in result["results"]:
        lines.append(f"{r['strategy']:<12} {r['batch']:>5}  {r['tokens_per_s']:>8.1f}  {r['speedup_vs_ar']:>7.2f}x"
                     f"  {r['tokens_per_encoder_pass']:>19.2f}  {r.get('identical_to_ar', '')}")
    return "\n".join(lines)
