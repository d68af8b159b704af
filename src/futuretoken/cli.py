"""`futuretoken` command line: one sub-command per job, each a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="futuretoken", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="prepare the built-in corpus, train tiny FTP + GPT on CPU, write a report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=int, default=None, help="training steps per model (default: the demo budget)")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("summary", help="print a model preset's shape, parameters and FLOPs")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--vocab-size", type=int, default=None)

    data = sub.add_parser("data", help="corpus preparation").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("prepare", help="corpus -> tokenizer -> token shards + manifest")
    p.add_argument("--corpus", default="builtin:prose",
                   help="builtin:prose | builtin:python | PATH/GLOB (*.txt, *.jsonl[#field], *.parquet) | hf:NAME[:CONFIG]")
    p.add_argument("--tokenizer", default="bpe:4096", help="bpe:VOCAB | gpt2 | PATH/tokenizer.json")
    p.add_argument("--out", required=True)
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train", help="train a GPT or FTP model (torchrun-ready)")
    p.add_argument("--config", default=None, help="TOML file with [model], [data], [train] tables")
    p.add_argument("--resume", action="store_true", help="continue from the run's newest valid checkpoint")
    p.add_argument("--help-config", action="store_true", help="list every config key with its default")
    p.add_argument("overrides", nargs="*", help="key=value or table.key=value, e.g. train.lr=3e-4 model.preset=tiny")

    p = sub.add_parser("generate", help="generate text from a trained run")
    p.add_argument("run")
    p.add_argument("prompt", nargs="?", default=None)
    p.add_argument("--prompts-file", default=None, help="one prompt per line, generated as a batch")
    p.add_argument("--strategy", default="ar", choices=["ar", "rollout", "speculative"])
    p.add_argument("--draft-len", type=int, default=None)
    p.add_argument("--device", default="cpu")
    _add_sampling_args(p)

    p = sub.add_parser("embed", help="per-token or pooled state vectors h_t of texts")
    p.add_argument("run")
    p.add_argument("input", help="a .txt file (one text per line) or .jsonl with a 'text' field")
    p.add_argument("--pool", default="mean", choices=["mean", "last", "tokens"])
    p.add_argument("--out", required=True, help=".npy (pooled) / .npz (tokens) or .parquet")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    return parser


def cmd_summary(args) -> None:
    import futuretoken as ft

    overrides = {"vocab_size": args.vocab_size} if args.vocab_size else {}
    cfg = ft.ModelConfig.preset(args.preset, **overrides)
    print(f"preset {args.preset}: {json.dumps(cfg.to_dict())}")
    for name, cls in ft.MODELS.items():
        model = cls(cfg)
        print(f"{name.upper():4s} parameters {model.num_parameters():>13,d}   "
              f"training FLOPs/token {ft.training_flops_per_token(cfg, name):.3e}")


def cmd_data(args) -> None:
    from .data import prepare

    manifest = prepare(corpus=args.corpus, tokenizer=args.tokenizer, out_dir=args.out,
                       val_fraction=args.val_fraction, seed=args.seed)
    splits = {s: manifest[s]["tokens"] for s in ("train", "val")}
    print(f"prepared {args.out}: vocab {manifest['vocab_size']}, tokens {splits}")


def cmd_train(args) -> None:
    from .config import RunConfig

    if args.help_config:
        for section, values in RunConfig.from_dict({}).to_dict().items():
            print(f"[{section}]" + ("  # also: preset = tiny | small | gpt2-124m" if section == "model" else ""))
            for key, value in values.items():
                print(f"  {key} = {value!r}")
        return
    from .train import train

    cfg = RunConfig.load(args.config, args.overrides)
    result = train(cfg, resume=args.resume)
    if result.interrupted:
        sys.exit(130)


def cmd_demo(args) -> None:
    from .demo import run_demo

    report = run_demo(out_dir=args.out, steps=args.steps, device=args.device)
    print(f"report written to {report}")


def _read_texts(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path} does not exist; give a .txt (one text per line) or .jsonl file")
    if p.suffix == ".jsonl":
        return [json.loads(line)["text"] for line in p.read_text().splitlines() if line.strip()]
    return [line for line in p.read_text().splitlines() if line.strip()]


def cmd_generate(args) -> None:
    from .infer.cli import generate_command

    prompts = _read_texts(args.prompts_file) if args.prompts_file else [args.prompt]
    if prompts == [None]:
        raise ValueError("give a prompt, or --prompts-file with one prompt per line")
    generate_command(args, prompts)


def cmd_embed(args) -> None:
    from .infer.cli import embed_command

    embed_command(args, _read_texts(args.input))


COMMANDS = {"summary": cmd_summary, "data": cmd_data, "train": cmd_train, "demo": cmd_demo,
            "generate": cmd_generate, "embed": cmd_embed}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ValueError, RuntimeError, FileNotFoundError, KeyError) as err:
        if os.environ.get("FUTURETOKEN_DEBUG"):
            raise
        print(f"futuretoken {args.command}: error: {err}", file=sys.stderr)
        print("(set FUTURETOKEN_DEBUG=1 for the full traceback)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
