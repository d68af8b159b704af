"""Effect of `decoder_fraction` (share of positions trained through the FTP decoder) on
training speed, next-token loss (E1) and smoothness (E3), at the demo's setting.

    python benchmarks/decoder_fraction.py --out runs/decoder-fraction --json benchmarks/results/decoder_fraction_tiny_cpu.json

Each fraction trains the demo's tiny FTP (`futuretoken.demo.demo_study`: the `tiny` preset on
the built-in prose, BPE 1024, prepared under runs/data when missing) for the same number of steps on
the same batches, with only `model.decoder_fraction` changed; runs are resumable, so an interrupted
sweep continues where it stopped. Per fraction it reports:

- tokens_per_s: the mean training throughput the trainer logged;
- val_next_token_loss: next-token loss on `--eval-batches` fixed batches of 16 validation windows
  (`futuretoken.training.evaluate`, the trainer's own validation);
- E3 (`futuretoken.eval.smoothness.smoothness_experiment`, the comparison's protocol): windows of
  T tokens inside validation documents (at most the demo's `smooth_per_document` per document),
  position means removed; `e3_adjacent` is the mean adjacent cosine, `e3_cross_document` the same
  cosine against a window of another document, `e3_excess` their difference (the claim's metric).

`--data DIR` trains on an already prepared folder instead of the demo's corpus (tests use it with
`--steps 2` as a smoke run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from futuretoken.bench.env import environment
from futuretoken.checkpoint import load_model
from futuretoken.data import TokenShards, WindowSampler
from futuretoken.demo import demo_study
from futuretoken.eval.render import mean_train_tokens_per_s
from futuretoken.eval.smoothness import EXPERIMENT as SMOOTHNESS
from futuretoken.eval.smoothness import smoothness_experiment
from futuretoken.eval.windows import document_windows
from futuretoken.training import evaluate, train


def measure(model, data_dir: Path, eval_batches: int, per_document: int, min_windows: int) -> dict:
    """Validation next-token loss and E3 of a trained model on the validation split of `data_dir`."""
    val = TokenShards(data_dir, "val")
    tokens = np.asarray(val.tokens)
    sampler = WindowSampler(tokens, model.config.block_size + model.horizon, 16, seed=1234)
    loss = evaluate(model, sampler, eval_batches, model.head_weight.device)["next_token_loss"]
    windows, docs = document_windows(tokens, val.eot_token, model.config.block_size, per_document, min_windows)
    e3 = smoothness_experiment(model, windows, docs)["summary"]
    return {"val_next_token_loss": loss, "e3_adjacent": e3["adjacent"]["mean"],
            "e3_cross_document": e3["cross_document"]["mean"], "e3_excess": e3["excess"]["mean"],
            "e3_excess_ci95": e3["excess"]["ci95"], "e3_windows": len(windows)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/decoder-fraction", help="run folders: OUT/fraction-F/ftp/seed-0")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data", default=None, help="a prepared data folder instead of the demo's corpus")
    parser.add_argument("--eval-batches", type=int, default=10, help="validation batches of 16 windows")
    parser.add_argument("--min-windows", type=int, default=None,
                        help="fewest E3 windows accepted (default: the demo's smoothness.min_windows)")
    args = parser.parse_args(argv)

    study = demo_study(args.steps, device=args.device)
    e3 = study.suite.of(SMOOTHNESS)
    min_windows = e3.min_windows if args.min_windows is None else args.min_windows
    rows, model = [], None
    for fraction in args.fractions:
        cfg = study.run_config("ftp", study.settings.seeds[0], Path(args.out) / f"fraction-{fraction}",
                                    Path(args.data) if args.data else None,
                                    model_overrides={"decoder_fraction": fraction})
        train(cfg, resume=True)
        model = load_model(cfg.train.out_dir, cfg.train.device)
        rows.append({"decoder_fraction": fraction, "steps": args.steps,
                     "tokens_per_s": mean_train_tokens_per_s(cfg.train.out_dir),
                     **measure(model, Path(cfg.data.dir), args.eval_batches, e3.per_document, min_windows)})
        print(rows[-1], flush=True)
    result = {"benchmark": "decoder_fraction", **environment(model.head_weight.device), "preset": "tiny",
              "data": study.run.data.dir if args.data is None else args.data, "results": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
