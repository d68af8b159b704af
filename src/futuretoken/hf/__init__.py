"""Hugging Face ecosystem: transformers wrappers, export, lm-eval task, sentence-transformers.

Needs `pip install 'futuretoken[hf]'`. Importing this package registers the model types
"futuretoken-gpt" and "futuretoken-ftp" with AutoConfig / AutoModel / AutoModelForCausalLM:

    import futuretoken.hf
    futuretoken.hf.export_hf("runs/demo/ftp", "runs/hf/ftp")            # or: futuretoken export-hf RUN OUT
    model = AutoModelForCausalLM.from_pretrained("runs/hf/ftp")         # or trust_remote_code=True, no import
    tok = AutoTokenizer.from_pretrained("runs/hf/ftp")
    SentenceTransformer("runs/hf/ftp").encode(texts)                    # == ft.load(run).embed(texts, pool="mean")

Unsupported: KV caching in generate() (each step re-encodes; fine at block_size scale), left
padding, inputs_embeds, sequences longer than block_size.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .export import export_hf, hf_tokenizer
from .lm_eval_tasks import TASK, build_local_task, evaluate_local_task
from .modeling import (
    BASE_MODELS,
    CAUSAL_LM,
    CONFIGS,
    FTPConfig,
    FTPForCausalLM,
    FTPModel,
    GPTConfig,
    GPTForCausalLM,
    GPTModel,
)

for _kind, _config in CONFIGS.items():
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, BASE_MODELS[_kind], exist_ok=True)
    AutoModelForCausalLM.register(_config, CAUSAL_LM[_kind], exist_ok=True)

__all__ = [
    "FTPConfig", "FTPForCausalLM", "FTPModel", "GPTConfig", "GPTForCausalLM", "GPTModel", "TASK",
    "build_local_task", "evaluate_local_task", "export_hf", "hf_tokenizer",
]
