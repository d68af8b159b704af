"""An MTEB (>= 2) encoder for futuretoken models: their pooled encoder states h_t as text embeddings.

    import mteb
    from futuretoken.hf import MTEBEncoder
    model = MTEBEncoder(ft.load("runs/demo/ftp"), pool="weighted_mean")
    mteb.evaluate(model, mteb.get_tasks(tasks=["STS12"]))   # any task; cosine similarity, unit vectors
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction

from futuretoken.infer import encode


class MTEBEncoder(AbsEncoder):
    """`model`: a loaded futuretoken model with its tokenizer (`futuretoken.load(run)`)."""

    def __init__(self, model, pool: str = "mean", batch_size: int = 32, name: str = "futuretoken/model") -> None:
        self.model, self.pool, self.batch_size = model, pool, batch_size
        c = model.config
        self.mteb_model_meta = ModelMeta(
            loader=None, name=name, revision="local", release_date=None, languages=None,
            n_parameters=model.num_parameters(), memory_usage_mb=None, max_tokens=c.block_size,
            embed_dim=c.n_embd, license=None, open_weights=True, public_training_code=None,
            public_training_data=None, framework=["PyTorch"], similarity_fn_name=ScoringFunction.COSINE,
            use_instructions=False, training_datasets=None,
        )

    def encode(self, inputs, *, task_metadata=None, hf_split: str = "", hf_subset: str = "", prompt_type=None,
               **kwargs: Any) -> np.ndarray:
        """inputs: MTEB's DataLoader of batches with a "text" list -> unit-norm float32 vectors (n, d)."""
        texts = [text for batch in inputs for text in batch["text"]]
        return encode(self.model, texts, normalize=True, batch_size=self.batch_size, pool=self.pool)
