"""On-disk cache of vocabulary text embeddings, keyed by the text weights and the vocabulary.

Encoding a vocabulary runs the text tower on 80 prompts per class: seconds to minutes. The result,
[T,P,D] float32, is stored as `<key>.npy` with a `<key>.json` sidecar naming what it holds; the key
is the sha256 of the text weights' digest, the exact class names and the templates. Files are
written atomically, so an interrupted write never leaves a cache entry that looks valid. The cache is
an optimisation: a cache folder that cannot be read or written never fails the work (`embed_names`
warns and goes on).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sed_deploy.core.contract import TEXT_FOLDER
from sed_deploy.core.fileio import atomic_write, cache_root, write_json

FORMAT = 1


def embedding_key(weights_digest: str, names: Sequence[str], templates: Sequence[str]) -> str:
    """Cache key of a vocabulary's embeddings under the text weights `weights_digest`."""
    payload = json.dumps(
        {"format": FORMAT, "weights": weights_digest, "names": list(names), "templates": list(templates)},
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """A folder of cached text embeddings."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root() / TEXT_FOLDER

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The cached [T,P,D] array for `key`, or None if absent or unreadable."""
        path = self.path(key)
        try:
            if not path.is_file():
                return None
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None

    def put(self, key: str, embeddings: np.ndarray, names: Sequence[str]) -> Path:
        """Store `embeddings` under `key` (atomically) and return the file's path.

        Raises:
            ArtifactError: the cache folder cannot be written (callers that only cache may go on).
        """
        path = self.path(key)
        write_json(path.with_suffix(".json"), {"format": FORMAT, "shape": list(embeddings.shape), "names": list(names)})
        with atomic_write(path) as f:
            np.save(f, np.ascontiguousarray(embeddings, dtype=np.float32), allow_pickle=False)
        return path
