"""`futuretoken` command line: one sub-command per job, each a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate per prompt (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens only")
    p.add_argument("--top-p", type=float, default=None, help="sample within the smallest set of probability >= p")
    p.add_argument("--seed", type=int, default=0, help="sampling seed: the same seed gives the same text")


SETTINGS_HELP = ("a TOML file with the measurements' settings: a [suite] table and [suite.NAME] tables as in "
                 "configs/experiments/*.toml, e.g. [suite.smoothness] min_windows = 40 (over --quick's or the defaults)")
DEVICE_HELP = "auto (CUDA when available) | cpu | cuda | cuda:N (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="futuretoken", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="prepare the built-in corpus, train tiny FTP + GPT on CPU, write a report")
    p.add_argument("--out", default="runs/demo", help="folder for the data, runs and report (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="training steps per model (default: the demo budget)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)

    p = sub.add_parser("summary", help="print a model preset's shape, parameters and FLOPs")
    p.add_argument("--preset", default="tiny", help="tiny | small | gpt2-124m (default: %(default)s)")
    p.add_argument("--vocab-size", type=int, default=None, help="override the preset's vocabulary size")

    data = sub.add_parser("data", help="corpus preparation").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("prepare", help="corpus -> tokenizer -> token shards + manifest")
    p.add_argument("--corpus", default="builtin:prose",
                   help="builtin:prose | builtin:brown | builtin:python | builtin:prose+brown | PATH/GLOB (*.txt, *.jsonl[#field], *.parquet) | hf:NAME[:CONFIG]")
    p.add_argument("--tokenizer", default="bpe:4096", help="bpe:VOCAB | gpt2 | PATH/tokenizer.json")
    p.add_argument("--out", required=True, help="the data folder to write (shards, tokenizer, manifest)")
    p.add_argument("--val-fraction", type=float, default=0.05,
                   help="share of documents held out for validation (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the document split (default: %(default)s)")

    p = sub.add_parser("train", help="train a GPT, FTP, MTP or MTP-seq model (torchrun-ready)")
    p.add_argument("--config", default=None, help="TOML file with [model], [data], [train] tables")
    p.add_argument("--resume", action="store_true", help="continue from the run's newest valid checkpoint")
    p.add_argument("--help-config", action="store_true", help="list every config key with its default")
    p.add_argument("overrides", nargs="*", help="key=value or table.key=value, e.g. train.lr=3e-4 model.preset=tiny")

    p = sub.add_parser("generate", help="generate text from a trained run")
    p.add_argument("run", help="a run folder (its newest checkpoint), a checkpoint or an exported model folder")
    p.add_argument("prompt", nargs="?", default=None, help="the text to continue (or --prompts-file)")
    p.add_argument("--prompts-file", default=None, help="one prompt per line, generated as a batch")
    p.add_argument("--strategy", default="ar", choices=["ar", "rollout", "speculative"],
                   help="ar: one token per encoder pass; rollout: the model's future heads write a draft that is kept "
                        "as it is; speculative: the drafts are verified, the output is ar's (default: %(default)s)")
    p.add_argument("--draft-len", type=int, default=None,
                   help="rollout/speculative: tokens per draft, 1..horizon (default: the model's horizon)")
    p.add_argument("--batch-size", type=int, default=32, help="prompts of equal token length generated together")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    _add_sampling_args(p)

    p = sub.add_parser("reproduce", help="train every arm and seed, run E1-E7 with gates and statistics, from one file")
    p.add_argument("--config", required=True, help="configs/experiments/cpu.toml or gpu.toml")
    p.add_argument("--out", required=True, help="the study's folder: runs, tasks, pieces/ and paper/report.md")
    p.add_argument("--device", default=None, help="train and evaluate here (default: the config's train.device)")
    p.add_argument("--judge-coherence", action="store_true",
                   help="judge E4 now, also where the config defers it (suite.coherence.judge = false)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="run only these seeds (a piece of a long study, into OUT/pieces/seeds-...); "
                        "the pieces are merged into OUT/paper once they cover every seed")

    p = sub.add_parser("eval", help="the paper's measurements (E1-E5, state use) on one run")
    p.add_argument("run", help="a run folder (its newest checkpoint) or a checkpoint folder")
    p.add_argument("--suite", default="paper", choices=["paper"], help="the measurements to run (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder for results.json")
    p.add_argument("--quick", action="store_true", help="CPU-sized settings (the demo's)")
    p.add_argument("--settings", default=None, help=SETTINGS_HELP)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)

    p = sub.add_parser("compare", help="runs at matched next-token loss against a baseline run, with gates and verdicts")
    p.add_argument("baseline", help="the baseline run (e.g. a GPT run folder)")
    p.add_argument("runs", nargs="+", help="one run folder per other arm (one seed each: use reproduce for several)")
    p.add_argument("--out", required=True, help="folder for report.md, results.json, plots and the measurement cache")
    p.add_argument("--quick", action="store_true", help="CPU-sized settings (the demo's)")
    p.add_argument("--settings", default=None, help=SETTINGS_HELP)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)

    bench = sub.add_parser("bench", help="measured speed: generation strategies, training throughput",
                           description="Runs with OMP_WAIT_POLICY=PASSIVE unless it is set (spinning OpenMP threads "
                                       "distort timings on a shared CPU); the JSON records the threads, the wait "
                                       "policy and the load average.")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    p = bench_sub.add_parser("train", help="GPT vs FTP training: step time, tokens/s, MFU, peak memory")
    p.add_argument("--preset", default="tiny", help="model shape: tiny | small | gpt2-124m (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step (default: %(default)s)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per model (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile each block, as train.compile does")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p = bench_sub.add_parser("generate", help="tokens/s of ar, rollout, speculative at batch 1 and 8")
    p.add_argument("--run", default="runs/demo/ftp/seed-0", help="a trained run folder (default: the demo's FTP)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt (default: %(default)s)")
    p.add_argument("--prompt-tokens", type=int, default=32, help="prompt length in tokens (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is reported (default: %(default)s)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)

    p = sub.add_parser("embed", help="per-token or pooled state vectors h_t of texts")
    p.add_argument("run", help="a run folder (its newest checkpoint), a checkpoint or an exported model folder")
    p.add_argument("input", help="a .txt file (one text per line) or .jsonl with a 'text' field")
    p.add_argument("--pool", default="mean", choices=["mean", "last", "weighted_mean", "tokens"],
                   help="one vector per text (mean, last, weighted_mean over its tokens) or every token's h_t "
                        "(default: %(default)s)")
    p.add_argument("--out", required=True, help=".npy (pooled) / .npz (tokens) or .parquet")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: %(default)s)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)

    p = sub.add_parser("export-hf", help="export a run for transformers, lm-eval and sentence-transformers")
    p.add_argument("run", help="a run folder (its newest checkpoint) or a checkpoint folder")
    p.add_argument("out", help="output folder")
    p.add_argument("--pool", default="mean", choices=["mean", "last", "weighted_mean"],
                   help="sentence-transformers pooling")
    return parser


def cmd_summary(args) -> None:
    import torch

    from .config import ModelConfig
    from .model import MODELS, training_flops_per_token

    overrides = {"vocab_size": args.vocab_size} if args.vocab_size is not None else {}
    cfg = ModelConfig.preset(args.preset, **overrides)
    print(f"preset {args.preset}: {json.dumps(cfg.to_dict())}")
    for name, cls in MODELS.items():
        with torch.device("meta"):  # parameters are counted, never allocated
            model = cls(cfg)
        print(f"{name.upper():4s} parameters {model.num_parameters():>13,d}   "
              f"training FLOPs/token {training_flops_per_token(cfg, name):.3e}")


def cmd_data(args) -> None:
    from .checkpoint import output_dir
    from .data import prepare

    output_dir(args.out, "data folder", run_folder_ok=False)  # never into a run folder: its tokenizer.json is the run's
    manifest = prepare(corpus=args.corpus, tokenizer=args.tokenizer, out_dir=args.out,
                       val_fraction=args.val_fraction, seed=args.seed)
    splits = {s: manifest[s]["tokens"] for s in ("train", "val")}
    print(f"prepared {args.out}: vocab {manifest['vocab_size']}, tokens {splits}")


def print_config_keys() -> None:
    """`train --help-config`: every key of every table, its default (TOML) and what it means."""
    from .config import PRESETS, DataConfig, ModelConfig, TrainConfig, describe

    for section, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
        print(f"[{section}]")
        if section == "model":
            print(f"  preset = (none)  # a base shape, other keys override it: {' | '.join(PRESETS)}")
        for key, default, meaning in describe(cls):
            value = "(unset)" if default is None else json.dumps(default)
            print(f"  {key} = {value}" + (f"  # {meaning}" if meaning else ""))
        print()


def cmd_train(args) -> None:
    from .config import RunConfig

    if args.help_config:
        print_config_keys()
        return
    from .training import train

    cfg = RunConfig.load(args.config, args.overrides)
    result = train(cfg, resume=args.resume)
    if result.interrupted:
        sys.exit(130)


def cmd_demo(args) -> None:
    from .demo import run_demo

    report = run_demo(out_dir=args.out, steps=args.steps, device=args.device)
    print(f"report written to {report}")


def cmd_generate(args) -> None:
    from .data.corpora import read_texts
    from .infer.commands import generate_command

    prompts = read_texts(args.prompts_file) if args.prompts_file else [args.prompt]
    if prompts == [None]:
        raise ValueError("give a prompt, or --prompts-file with one prompt per line")
    generate_command(args, prompts)


def cmd_embed(args) -> None:
    from .data.corpora import read_texts
    from .infer.commands import embed_command

    embed_command(args, read_texts(args.input))


def _suite(quick: bool, settings: str | None = None):
    """The measurements' settings: --quick's (the demo's) or the defaults, with a --settings file's [suite] over them."""
    import dataclasses

    from .config import read_toml
    from .demo import demo_study
    from .eval.suite import SuiteSettings

    base = demo_study().suite if quick else SuiteSettings()
    if settings is None:
        return base
    table = read_toml(settings)
    unknown = set(table) - {"suite"}
    if unknown:
        raise ValueError(f"{settings} has tables {sorted(unknown)}; a --settings file holds [suite] and [suite.NAME] only")
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.name != "experiments"}
    values.update({name: dataclasses.asdict(own) for name, own in base.experiments.items()})
    for key, value in table.get("suite", {}).items():  # [suite.NAME] tables update that experiment's settings
        values[key] = {**values[key], **value} if isinstance(value, dict) and isinstance(values.get(key), dict) else value
    return SuiteSettings.from_dict(values)


def cmd_reproduce(args) -> None:
    from .eval.coherence import EXPERIMENT as COHERENCE
    from .study import Study, reproduce

    study = Study.load(args.config)
    if args.judge_coherence:
        study.suite.of(COHERENCE).judge = True
    if args.device is not None:
        study.run.train.device = args.device  # the runs, the tasks and the measurements
    report = reproduce(study, args.out, seeds=args.seeds)
    print(report.read_text())
    print(f"report written to {report}")


def cmd_eval(args) -> None:
    from .eval.suite import evaluate_run

    print(f"results written to {evaluate_run(args.run, args.out, _suite(args.quick, args.settings), device=args.device)}")


def cmd_compare(args) -> None:
    from .study import compare_runs

    names = [Path(r).name for r in (args.baseline, *args.runs)]
    if len(set(names)) != len(names):  # arms are named by their folders; make repeated names unique
        names = [f"{n}-{i}" for i, n in enumerate(names)]
    runs = {name: {0: Path(run)} for name, run in zip(names, (args.baseline, *args.runs))}
    report = compare_runs(runs, names[0], args.out, _suite(args.quick, args.settings), device=args.device)
    print(report.read_text())
    print(f"report written to {report}")


def _write_json(path: str | None, result: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {path}")


def cmd_bench(args) -> None:
    from .checkpoint import output_dir
    from .devices import resolve_device

    device = str(resolve_device(args.device))
    if args.json:  # checked before the benchmark runs, not after
        output_dir(Path(args.json).parent, "--json folder")
    if args.bench_command == "train":
        from .bench.train import bench_train, format_table

        result = bench_train(args.preset, args.batch_size, args.steps, args.warmup, args.compile, device)
        print(format_table(result))
        _write_json(args.json, result)
        return
    from .bench.generate import bench_generate, format_table, spread_prompts
    from .checkpoint import load_model, run_data_dir
    from .data import TokenShards

    model = load_model(args.run, device)
    prompts = spread_prompts(TokenShards(run_data_dir(args.run), "val").tokens, args.prompt_tokens)
    result = bench_generate(model, prompts, args.max_new_tokens, repeats=args.repeats)
    result["run"] = str(args.run)
    print(format_table(result))
    _write_json(args.json, result)


def cmd_export_hf(args) -> None:
    try:
        from .hf import export_hf
    except ImportError as err:
        raise RuntimeError(f"export-hf needs the hf extra ({err}). Fix: pip install 'futuretoken[hf]'") from None
    print(f"exported {export_hf(args.run, args.out, pool=args.pool)}")


COMMANDS = {
    "demo": cmd_demo, "summary": cmd_summary, "data": cmd_data, "train": cmd_train, "generate": cmd_generate,
    "embed": cmd_embed, "reproduce": cmd_reproduce, "eval": cmd_eval, "compare": cmd_compare, "bench": cmd_bench,
    "export-hf": cmd_export_hf,
}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if argv is None and args.command == "bench" and "OMP_WAIT_POLICY" not in os.environ:
        # OpenMP reads its wait policy once, when torch loads it (already done here): start again with
        # PASSIVE, whose threads sleep while they wait (spinning ones made 2 threads 5x slower under load).
        os.execve(sys.executable, [sys.executable, "-m", "futuretoken.cli", *sys.argv[1:]],
                  {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    try:
        COMMANDS[args.command](args)
    except (ValueError, RuntimeError, OSError, KeyError) as err:  # OSError: a full disk, a file in the way
        if os.environ.get("FUTURETOKEN_DEBUG"):
            raise
        print(f"futuretoken {args.command}: error: {err}", file=sys.stderr)
        print("(set FUTURETOKEN_DEBUG=1 for the full traceback)", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:  # Ctrl-C: training saved its checkpoints (training/many.py)
        print(f"futuretoken {args.command}: {err or 'interrupted'}", file=sys.stderr)
        sys.exit(130)
    except MemoryError:
        if os.environ.get("FUTURETOKEN_DEBUG"):
            raise
        print(f"futuretoken {args.command}: error: out of memory. Fix: use smaller inputs (shorter texts, fewer at "
              "a time: --batch-size), a smaller model, or a machine with more memory", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
