"""Export a trained run as one folder that transformers, lm-eval and sentence-transformers all load.

OUT/ holds: config.json (+ auto_map), model.safetensors, generation_config.json,
modeling_futuretoken.py (self-contained, for trust_remote_code=True where futuretoken is not
installed: hf/standalone.py), tokenizer.json + tokenizer_config.json
(a PreTrainedTokenizerFast, eos = bos = pad = <|endoftext|>, right padding) and the
sentence-transformers files (modules.json, sentence_bert_config.json, 1_Pooling/config.json).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import load_model, output_dir
from ..data.tokenizer import EOT, TiktokenTokenizer, Tokenizer
from .modeling import CAUSAL_LM

# our pool -> sentence-transformers' Pooling flag (its weighted mean is SGPT's position weighting, as ours)
POOLS = {"mean": "pooling_mode_mean_tokens", "last": "pooling_mode_lasttoken",
         "weighted_mean": "pooling_mode_weightedmean_tokens"}


def hf_tokenizer(tokenizer: Tokenizer, model_max_length: int):
    """Our tokenizer as a transformers PreTrainedTokenizerFast (same ids, no special tokens added)."""
    from transformers import PreTrainedTokenizerFast

    backend = _tiktoken_backend(tokenizer) if isinstance(tokenizer, TiktokenTokenizer) else tokenizer.backend
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOT, bos_token=EOT, pad_token=EOT, padding_side="right",
        model_max_length=model_max_length, clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )


def _tiktoken_backend(tokenizer: TiktokenTokenizer):
    """GPT-2's tiktoken ranks -> an equivalent HF byte-level BPE (vocab + merges recovered from the ranks)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    ranks: dict[bytes, int] = tokenizer.backend._mergeable_ranks
    byte_char = _bytes_to_unicode()

    def to_str(b: bytes) -> str:
        return "".join(byte_char[x] for x in b)

    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:  # replay BPE with the merges ranked below this one: it ends in exactly two parts
            parts = [bytes([b]) for b in token]
            while len(parts) > 2:
                pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
                best, i = min(pairs)
                if best >= rank:
                    break
                parts[i : i + 2] = [parts[i] + parts[i + 1]]
            if len(parts) != 2:
                raise ValueError(f"token {token!r} (rank {rank}) is not a merge of two lower-ranked tokens")
            merges.append((to_str(parts[0]), to_str(parts[1])))
    tok = HFTokenizer(models.BPE({to_str(t): r for t, r in ranks.items()}, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's split pattern
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT])
    if tok.token_to_id(EOT) != tokenizer.eot_token:
        raise ValueError(f"converted GPT-2 tokenizer puts {EOT} at {tok.token_to_id(EOT)}, "
                         f"expected {tokenizer.eot_token}")
    return tok


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


def export_hf(run_dir: str | Path, out_dir: str | Path, pool: str = "mean") -> Path:
    """Write RUN's newest checkpoint (or a checkpoint folder) to OUT for transformers / lm-eval /
    sentence-transformers; `pool` ("mean", "last" or "weighted_mean") is the sentence-transformers pooling."""
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is unknown; choose one of {', '.join(POOLS)}")
    out = output_dir(out_dir, "export folder", run_folder_ok=False)
    model = load_model(run_dir)
    if model.tokenizer is None:
        raise FileNotFoundError(f"{run_dir} has no tokenizer.json; export needs a run folder (or one of its "
                                "checkpoints) trained by futuretoken")
    hf = CAUSAL_LM[model.model_type].from_module(model)
    eot = model.tokenizer.eot_token  # the document separator: begins, ends and pads sequences
    hf.config.bos_token_id = hf.config.eos_token_id = hf.config.pad_token_id = eot
    hf.generation_config.bos_token_id = hf.generation_config.eos_token_id = hf.generation_config.pad_token_id = eot
    hf.save_pretrained(out)  # with modeling_futuretoken.py and auto_map (modeling.py save_pretrained)
    hf_tokenizer(model.tokenizer, model.config.block_size).save_pretrained(out)
    _write_sentence_transformer_files(out, model.config.n_embd, model.config.block_size, pool)
    return out


def _write_sentence_transformer_files(out: Path, dim: int, max_seq_length: int, pool: str) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    pooling = {"word_embedding_dimension": dim, **{flag: False for flag in (
        "pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
        *POOLS.values())}, POOLS[pool]: True}
    (out / "1_Pooling").mkdir(exist_ok=True)
    files = {"modules.json": modules, "1_Pooling/config.json": pooling,
             "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False}}
    for name, value in files.items():
        (out / name).write_text(json.dumps(value, indent=2) + "\n")
