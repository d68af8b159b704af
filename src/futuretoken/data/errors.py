"""The one exception type of the data package.

A `ValueError` subclass, so callers that already catch bad-input errors keep working; every
message names the problem and the fix.
"""


class DataError(ValueError):
    """A corpus, tokenizer or token-shard problem the user can fix (the message says how)."""
