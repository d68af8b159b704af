"""Data: corpora -> tokenizer -> memory-mapped token shards with a manifest.

    prepare(corpus="builtin:prose", tokenizer="bpe:4096", out_dir="runs/data/prose-bpe4096")
    train = TokenShards("runs/data/prose-bpe4096", "train").tokens   # 1-D uint16 array
    tok = load_tokenizer("runs/data/prose-bpe4096")
"""

from .corpora import iter_documents
from .errors import DataError
from .preparation import prepare
from .sampler import WindowSampler
from .shards import TokenShards
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["DataError", "TokenShards", "Tokenizer", "WindowSampler", "iter_documents", "load_tokenizer", "prepare"]
