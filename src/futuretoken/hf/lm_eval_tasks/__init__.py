"""A local lm-evaluation-harness task built from held-out text: runs offline, no dataset download.

    task_dir = build_local_task("runs/data/prose-bpe4096", "runs/lm_eval_task")  # its validation split
    scores = evaluate_local_task("runs/hf/ftp", task_dir)   # {"acc,none": ..., "acc_norm,none": ...}

Each item: up to `context_words` words of a held-out document, then 4 choices for the next word
(the true one and 3 other words of the same text, shuffled). Chance is 0.25.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

from ...data.tokenizer import EOT

TASK = "futuretoken_nextword"
TEMPLATE = Path(__file__).with_name(f"{TASK}.yaml")


def _held_out_text(data: str | Path) -> str:
    """A prepared corpus folder (-> its decoded validation split), a text file, or the text itself."""
    try:
        path = Path(data)
        exists = path.exists()
    except (OSError, ValueError):  # text too long or odd to be a path
        exists = False
    if exists and path.is_dir():
        from ...data import TokenShards, load_tokenizer

        return load_tokenizer(path).decode(TokenShards(path, "val").tokens[:200_000].tolist())
    if exists:
        return path.read_text(encoding="utf-8")
    if isinstance(data, Path):
        raise FileNotFoundError(f"{data} does not exist; give a prepared corpus folder, a text file or text")
    return str(data)


def _bare(word: str) -> str:
    return word.strip(string.punctuation).lower()


def build_local_task(data: str | Path, out_dir: str | Path, n: int = 200, context_words: int = 24,
                     seed: int = 0) -> Path:
    """Write OUT/futuretoken_nextword.{jsonl,yaml} (the YAML names the data by absolute path) and return
    OUT, the folder to give `lm_eval.tasks.TaskManager(include_path=...)`."""
    docs = [d.split() for d in _held_out_text(data).split(EOT)]
    vocabulary = sorted({w for d in docs for w in d})
    if len({_bare(w) for w in vocabulary}) < 4:
        raise ValueError("the held-out text is too small for the task: it needs at least 4 distinct words")
    positions = [(d, i) for d, words in enumerate(docs) for i in range(4, len(words))]
    if not positions:
        raise ValueError("the held-out text is too small for the task: it needs a document of 5+ words")
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    for d, i in rng.sample(positions, min(n, len(positions))):
        words = docs[d]
        answer = words[i]
        others = [w for w in vocabulary if _bare(w) != _bare(answer)]  # no "word." against "word"
        choices = [answer, *rng.sample(others, 3)]
        rng.shuffle(choices)
        items.append({"context": " ".join(words[max(0, i - context_words) : i]), "choices": choices,
                      "label": choices.index(answer)})
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_file = out / f"{TASK}.jsonl"
    data_file.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    (out / TEMPLATE.name).write_text(TEMPLATE.read_text().replace("DATA_FILE", json.dumps(str(data_file))))
    return out


def evaluate_local_task(hf_dir: str | Path, task_dir: str | Path, batch_size: int = 8, device: str = "cpu",
                        limit: int | None = None) -> dict[str, float]:
    """Run the task with lm-eval's `hf` model on an export_hf folder; returns its metrics, e.g. 'acc,none'."""
    import lm_eval
    from lm_eval.tasks import TaskManager  # futuretoken.hf, imported as our parent, registered the model types

    result = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={Path(hf_dir).resolve()},dtype=float32,backend=causal", tasks=[TASK],
        task_manager=TaskManager(include_path=str(task_dir)), batch_size=batch_size, device=device, limit=limit,
    )
    return {k: v for k, v in result["results"][TASK].items() if isinstance(v, (int, float))}
