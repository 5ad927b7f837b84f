"""A bounded in-memory cache of vocabulary text embeddings, shared by the server's pipelines.

A server takes a vocabulary with every request. Encoding one runs the text stage on 80 prompts
per class (milliseconds for a few classes on SED-tiny, seconds to minutes for hundreds on B), so
each vocabulary is encoded once and kept here, least recently used first out, within a bound on
the number of vocabularies and on their bytes ([T,P,D] float32: 200 KB per class on SED-B). An
entry larger than the byte bound on its own is used for its request and not kept.

It has the `get`/`put` interface of `runtime.embedding_cache.EmbeddingCache`, so it takes that
cache's place in a `Pipeline` (`pipeline.cache = cache`): the pipeline looks vocabularies up here
by the same key (text weights, names, templates) and stores what it encodes here, never on disk,
so clients cannot fill the server's disk. The model instances of one server run in threads of one
process and share it; a lock guards it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import cachetools
import numpy as np

from sed_deploy.core.errors import ConfigError


class VocabularyCache:
    """LRU of text embeddings keyed by `runtime.embedding_cache.embedding_key` (cachetools' LRUCache sized in
    bytes, plus a bound on the number of vocabularies).

    Args:
        max_entries: most vocabularies kept (0: none).
        max_bytes: most bytes of embeddings kept.
    """

    def __init__(self, max_entries: int = 64, max_bytes: int = 512 << 20) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ConfigError(f"vocabulary cache bounds must be >= 0, got {max_entries} entries and {max_bytes} bytes")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: cachetools.LRUCache = cachetools.LRUCache(maxsize=max_bytes, getsizeof=lambda a: a.nbytes)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            found = self._entries.get(key)  # a hit is now the most recently used
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
            return found

    def put(self, key: str, embeddings: np.ndarray, names: Sequence[str] = ()) -> None:
        """Keep `embeddings` (read-only from now on) and evict the least recently used beyond the bounds."""
        array = np.ascontiguousarray(embeddings, dtype=np.float32)
        array.flags.writeable = False
        with self._lock:
            self._entries.pop(key, None)
            if array.nbytes > self.max_bytes or self.max_entries == 0:
                return  # used for its request, not kept
            self._entries[key] = array  # evicts by bytes
            while len(self._entries) > self.max_entries:
                self._entries.popitem()  # the least recently used

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return int(self._entries.currsize)
