"""CLIP's byte-level BPE tokenizer without torch, reading the merges file shipped in the artifacts.

The runtime encodes new vocabularies through the exported text graph, so it needs the same token
ids as open_clip's default tokenizer (context 77, start 49406, end 49407) without importing torch.
Behaviour, as CLIP defines it:

1. clean: repair the text with ftfy, unescape HTML entities twice, collapse whitespace, lower-case;
2. split into words: the special tokens, the English contractions 's 't 're 've 'm 'll 'd, runs of
   letters, single digits, runs of other non-space characters;
3. map each word's UTF-8 bytes to printable characters (a fixed byte -> character table), mark the
   last one as word-final (`</w>`), and merge adjacent pairs by the rank of the merge in the file,
   best rank first, until no ranked pair is left;
4. wrap in start and end tokens; truncate to the context keeping the end token last; pad with 0.

`regex` (for Unicode letter and number classes) and `ftfy` come with the `text` extra.
"""

from __future__ import annotations

import gzip
import html
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sed_deploy.core.errors import ArtifactError
from sed_deploy.core.optional import require

NUM_MERGES = 49152 - 256 - 2  # the merges CLIP uses: the file has more lines than that
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
WORD_END = "</w>"


def byte_characters() -> list[str]:
    """The printable character standing for each byte value 0..255.

    Bytes that are printable Latin-1 characters stand for themselves; the others get the code
    points from 256 upwards, in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _vocabulary_order(byte_chars: list[str]) -> list[str]:
    """Byte characters in CLIP's vocabulary order: printable bytes first (ascending), then the rest."""
    printable = [b for b in range(256) if byte_chars[b] == chr(b)]
    others = [b for b in range(256) if byte_chars[b] != chr(b)]
    return [byte_chars[b] for b in printable + others]


class ClipTokenizer:
    """Token ids of texts, identical to open_clip's default (`open_clip.tokenize`).

    Args:
        merges: the BPE merges in rank order, as (left, right) pairs.
    """

    def __init__(self, merges: Sequence[tuple[str, str]]) -> None:
        regex = require("regex", "tokenizing class names")
        self._ftfy = require("ftfy", "tokenizing class names")
        self._byte_chars = byte_characters()
        base = _vocabulary_order(self._byte_chars)
        vocab = base + [c + WORD_END for c in base] + ["".join(pair) for pair in merges] + list(SPECIAL_TOKENS)
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.sot_id, self.eot_id = self.ids[SPECIAL_TOKENS[0]], self.ids[SPECIAL_TOKENS[1]]
        self._words = regex.compile(
            "|".join(SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self._whitespace = regex.compile(r"\s+")
        self._cache: dict[str, list[str]] = {t: [t] for t in SPECIAL_TOKENS}

    @classmethod
    def from_file(cls, path: str | Path) -> ClipTokenizer:
        """Read a gzip merges file such as `bpe_simple_vocab_16e6.txt.gz` (first line a header)."""
        path = Path(path)
        try:
            lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
        except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
            raise ArtifactError(f"cannot read the tokenizer merges file {path}: {exc}; re-export") from None
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
        if len(merges) != NUM_MERGES or any(len(pair) != 2 for pair in merges):
            raise ArtifactError(f"{path} is not a CLIP merges file (expected {NUM_MERGES} merge lines)")
        return cls(merges)

    def clean(self, text: str) -> str:
        text = html.unescape(html.unescape(self._ftfy.fix_text(text))).strip()
        return self._whitespace.sub(" ", text).strip().lower()

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without the start and end tokens."""
        ids = []
        for word in self._words.findall(self.clean(text)):
            chars = "".join(self._byte_chars[b] for b in word.encode("utf-8"))
            ids.extend(self.ids[piece] for piece in self._merge(chars))
        return ids

    def _merge(self, word: str) -> list[str]:
        """BPE pieces of one word (already mapped to byte characters)."""
        if word in self._cache:
            return self._cache[word]
        pieces = [*word[:-1], word[-1] + WORD_END]
        while len(pieces) > 1:
            ranked = [(self.ranks.get(pair, NUM_MERGES), pair) for pair in zip(pieces, pieces[1:], strict=False)]
            rank, best = min(ranked)
            if rank == NUM_MERGES:
                break
            merged, i = [], 0
            while i < len(pieces):
                if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                    merged.append(pieces[i] + pieces[i + 1])
                    i += 2
                else:
                    merged.append(pieces[i])
                    i += 1
            pieces = merged
        self._cache[word] = pieces
        return pieces

    def __call__(self, texts: Sequence[str], context_length: int = 77) -> np.ndarray:
        """[len(texts), context_length] int64: start, ids, end, zeros; too long: cut, end kept last."""
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot_id
            out[row, : len(ids)] = ids
        return out
