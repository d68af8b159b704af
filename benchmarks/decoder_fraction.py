"""Effect of `decoder_fraction` (share of positions trained through the FTP decoder) on
training speed, next-token loss (E1) and smoothness (E3), at the demo's setting.

    python benchmarks/decoder_fraction.py --out runs/decoder-fraction --json benchmarks/results/decoder_fraction_cpu.json

Each fraction trains the tiny FTP for the same number of steps on the same batches;
runs are resumable, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from futuretoken.bench.env import environment
from futuretoken.checkpoint import load_model
from futuretoken.data import TokenShards, WindowSampler
from futuretoken.demo import demo_experiment
from futuretoken.eval.paper import next_token_loss
from futuretoken.eval.report import mean_train_tokens_per_s
from futuretoken.eval.smoothness import smoothness_stats
from futuretoken.reproduce import run_config_for
from futuretoken.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/decoder-fraction")
    parser.add_argument("--json", default=None)
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    base = demo_experiment(args.steps, device="auto").run
    rows = []
    for fraction in args.fractions:
        cfg = run_config_for(base, "ftp", Path(args.out) / f"fraction-{fraction}")
        cfg.model.decoder_fraction = fraction
        train(cfg, resume=True)
        model = load_model(cfg.train.out_dir)
        val = TokenShards(cfg.data.dir, "val").tokens
        windows = WindowSampler(val, model.config.block_size, 32, seed=99).batch(0)
        rows.append({"decoder_fraction": fraction, "steps": args.steps,
                     "tokens_per_s": mean_train_tokens_per_s(cfg.train.out_dir),
                     "val_next_token_loss": next_token_loss(model, val, 10),
                     "adjacent_cosine_centred": smoothness_stats(model, windows)["centred"]["mean"]})
        print(rows[-1], flush=True)
    result = {"benchmark": "decoder_fraction", **environment(model.head_weight.device), "preset": "tiny",
              "results": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
