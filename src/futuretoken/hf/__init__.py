"""Hugging Face ecosystem: transformers wrappers, export, lm-eval task, sentence-transformers, MTEB.

Needs `pip install 'futuretoken[hf]'`. Importing this package registers the model types
"futuretoken-gpt" and "futuretoken-ftp" with AutoConfig / AutoModel / AutoModelForCausalLM:

    import futuretoken.hf
    futuretoken.hf.export_hf("runs/demo/ftp", "runs/hf/ftp")            # or: futuretoken export-hf RUN OUT
    model = AutoModelForCausalLM.from_pretrained("runs/hf/ftp")         # or trust_remote_code=True, no import
    tok = AutoTokenizer.from_pretrained("runs/hf/ftp", padding_side="left")
    model.generate(**tok(prompts, return_tensors="pt", padding=True), max_new_tokens=20)   # KV-cached
    model.generate(..., custom_generate=futuretoken.hf.speculative_decoding, draft_len=4)  # FTP speculative
    SentenceTransformer("runs/hf/ftp").encode(texts)                    # == ft.encode(ft.load(run), texts)
    futuretoken.hf.mteb.MTEBEncoder(ft.load(run))                       # an MTEB (>= 2) encoder

Unsupported: sequences longer than block_size (no sliding window), static / compiled caches,
gradient checkpointing through transformers' API (use futuretoken's train.activation_checkpointing).
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
from .speculative import speculative_decoding

for _kind, _config in CONFIGS.items():
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, BASE_MODELS[_kind], exist_ok=True)
    AutoModelForCausalLM.register(_config, CAUSAL_LM[_kind], exist_ok=True)

__all__ = [
    "FTPConfig", "FTPForCausalLM", "FTPModel", "GPTConfig", "GPTForCausalLM", "GPTModel", "TASK",
    "build_local_task", "evaluate_local_task", "export_hf", "hf_tokenizer", "speculative_decoding",
]
