"""`Pipeline`: the stages of SED in turn on one backend, pruning classes between calls.

    pipeline = Pipeline.from_artifacts("artifacts/B", backend="auto")
    pipeline.set_vocabulary(["person", "car", "road", "sky"])
    result = pipeline("street.jpg")          # Segmentation

Category early rejection (CER) happens on the host between stage calls, through the dynamic class
axis: the stage's top-k index map (K best classes per pixel, int32) comes back, the runtime takes
the union of the first k per pixel, maps it to global class ids and passes the local indices as
`keep` to the next stage, which gathers its inputs on the device. With CER off every class stays.
This is the original fast path exactly: a class survives if it is among the k best at one pixel of
the aux head at least; rejected classes score 0.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sed_deploy.core.contract import (
    COST,
    IMAGE,
    IMAGE_STAGES,
    KEEP,
    LOGITS,
    STAGE,
    TEXT,
    TEXT_EMBEDDINGS,
    TEXT_FOLDER,
    TEXT_STAGE,
    TOKENS,
)
from sed_deploy.core.errors import ConfigError, VocabularyError
from sed_deploy.core.manifest import Manifest

from .backends import backend_class, canonical_name, choose_backend
from .backends.base import StageBackend, check_precision, graph_precision
from .backends.options import BackendOptions, backend_of, options_for
from .decode import DEFAULT_MAX_PIXELS, ImageSource, check_max_pixels, load_image
from .embedding_cache import EmbeddingCache, embedding_key
from .name_repair import NameChange, check_unique, normalize_names
from .postprocess import label_map, sigmoid
from .preprocess import preprocess
from .prompts import IMAGENET_TEMPLATES, check_names
from .segmentation import Segmentation
from .text_encoding import context_overflows, embed_names

# local indices of the classes to keep, from a top-k map [K,h,w], k and the current class count
KeepPolicy = Callable[[np.ndarray, int, int], np.ndarray]


def topk_union(topk: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """Classes among the first k of some pixel's top-k list: sorted int32 local indices.

    Indices >= num_classes are the graph's padding (when num_classes < K) and are dropped.
    """
    votes = topk[:k].reshape(-1)
    return np.flatnonzero(np.bincount(votes, minlength=num_classes)[:num_classes]).astype(np.int32)


class Pipeline:
    """SED on a backend, one image at a time (batch 1, as the original fast path).

    Build it with `from_artifacts`; set a vocabulary once; call it on images.
    """

    def __init__(self, manifest: Manifest, folder: Path, backends: dict[str, StageBackend], backend: str,
                 topk: int, cer: bool, cache: EmbeddingCache | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.manifest = manifest
        self.folder = folder
        self.backends = backends
        self.backend = backend
        self.topk = topk
        self.cer = cer
        self.max_pixels = check_max_pixels(max_pixels)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.keep_policy: KeepPolicy = topk_union
        self.names: list[str] | None = None
        self.name_changes: list[NameChange] = []
        self.text: np.ndarray | None = None
        self.text_input = None  # `text` where the cost stage reads it (on the device for tensorrt)
        self._uploaded: np.ndarray | None = None  # the array `text_input` was made from
        self._tokenizer = None
        # backends whose outputs live in reused buffers (tensorrt) run one image at a time
        self._serial = threading.Lock() if any(b.serial_runs for b in backends.values()) else None

    @classmethod
    def from_artifacts(
        cls,
        path: str | Path,
        backend: str = "auto",
        options: BackendOptions | None = None,
        topk: int | None = None,
        cer: bool = True,
        cache_dir: str | Path | None = None,
        verify: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> Pipeline:
        """Load an artifacts folder (written by sed-export) on a backend.

        Args:
            path: the artifacts folder.
            backend: "auto" or a registered backend name ("ort", "openvino", "tensorrt", "torch").
            options: how the backend runs (`backends.options`): `BackendOptions(precision=, threads=)`
                for any backend, or a backend's own class (`OrtOptions(providers=...)`,
                `TensorrtOptions(cuda_graphs=True)`, `TorchOptions(device="cuda")`), which also names
                the backend when `backend` is "auto". Precision: fp32 graphs by default, or those
                exported with sed-export --precision; on tensorrt the engines built; bf16 is a
                runtime precision of openvino (the fp32 graphs compiled for bfloat16).
            topk: k of category early rejection (default: the manifest's, 8); at most the K the
                graphs were exported with.
            cer: category early rejection on (the fast path) or off (every class decoded).
            cache_dir: where new vocabulary embeddings are cached (default ~/.cache/sed-deploy).
            verify: check the graph files the backend reads against the manifest's sha256 first.
            max_pixels: images with more pixels are refused before they are decoded (`decode`).
        """
        _check_arguments(path=path, backend=backend, topk=topk, cer=cer, options=options)
        check_max_pixels(max_pixels)
        folder = Path(path)
        manifest = Manifest.load(folder)
        k = manifest.default_topk if topk is None else topk
        if not 1 <= k <= manifest.topk:
            raise ConfigError(f"top-k must be between 1 and {manifest.topk} (the K these graphs were exported "
                              f"with), got {k}; re-export with sed-export --topk {max(k, 1)} for a larger k")
        named = backend_of(options) if options is not None else None
        if named is not None and canonical_name(backend) == "auto":
            backend = named
        precision = options.precision if options is not None else None
        name = choose_backend(backend, manifest, folder, precision)
        options = options_for(name, options)
        check_precision(name, precision)
        if verify:  # engines replace the image graphs on tensorrt; only the text graph may still be read
            if name == "tensorrt":
                manifest.verify_files(folder, (TEXT_STAGE,))
            else:
                manifest.verify_files(folder, precision=graph_precision(precision))
        backends = backend_class(name).for_artifacts(manifest, folder, options)
        cache = EmbeddingCache(Path(cache_dir) / TEXT_FOLDER) if cache_dir is not None else None
        pipeline = cls(manifest, folder, backends, name, k, cer, cache, max_pixels)
        try:
            pipeline.load()
        except BaseException:
            pipeline.close()  # the stages that did load give their memory back now
            raise
        return pipeline

    def load(self) -> Pipeline:
        """Load the five image stages now (the text stage loads when a vocabulary needs it)."""
        for stage in IMAGE_STAGES:
            self.backends[stage].load()
        return self

    @property
    def weights(self) -> str:
        """Where the weights came from: "random", "checkpoint", ... (the manifest's `weights.weights`)."""
        return str(self.manifest.weights.get("weights", "unknown"))

    @property
    def engines(self) -> dict[str, str]:
        """What runs each stage: {stage: "tensorrt fp16 (cost.fp16.<key>.engine)", "ort fp32", ...}."""
        return {stage: backend.describe() for stage, backend in self.backends.items()}

    # vocabulary -------------------------------------------------------------------------------

    def set_vocabulary(self, names: Sequence[str], embeddings: np.ndarray | None = None,
                       show_progress: bool = True, normalize: bool = True) -> None:
        """Use `names` from now on: encode them through the text stage (or take the cache's).

        Args:
            names: class names (", " separates synonyms of one class).
            embeddings: precomputed [T,P,D] float32 text embeddings of exactly these names
                (skips the text stage).
            show_progress: progress bar while encoding.
            normalize: repair the names first (`names.normalize_names`: mojibake, NFC, control
                characters, emoji, whitespace); `self.names` holds the names used and
                `self.name_changes` what was changed.
        """
        given = check_names(names)
        names, changes = normalize_names(given) if normalize else (given, [])
        check_unique(names, given)
        m = self.manifest
        if embeddings is None:
            self._warn_context_overflow(names)
            embeddings = self._lookup_embeddings(names)
        if embeddings is None and changes and all(c.token_neutral for c in changes):
            embeddings = self._lookup_embeddings(given)  # e.g. ade150's "bed ": cached under the names as given
        if embeddings is None:
            embeddings = embed_names(names, self.tokenize, self.encode_tokens, m.text["weights_digest"],
                                     m.num_templates, self.cache, show_progress=show_progress)
        if not isinstance(embeddings, np.ndarray):
            raise VocabularyError(f"embeddings must be a numpy array [T,P,D], got {type(embeddings).__name__}")
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.shape != (len(names), m.num_templates, m.embed_dim):
            raise VocabularyError(f"expected embeddings [{len(names)},{m.num_templates},{m.embed_dim}] for "
                                  f"{len(names)} names, got {list(embeddings.shape)}")
        # uploaded once per vocabulary: per image only the image, `keep` and the top-k maps cross
        with self._serial if self._serial is not None else contextlib.nullcontext():
            self.names, self.text, self.name_changes = names, embeddings, changes
            self._upload_text()

    def _upload_text(self) -> None:
        """Put `text` where the cost stage reads it (once per vocabulary, or after `text` was replaced)."""
        self.text_input = self.backends[COST].load().to_device(TEXT, self.text)
        self._uploaded = self.text

    def _warn_context_overflow(self, names: list[str]) -> None:
        """Warn about names CLIP reads cut (the original does the same, silently)."""
        context = self.manifest.context_length
        found = context_overflows(names, lambda text: len(self.tokenizer.encode(text)),
                                  IMAGENET_TEMPLATES[: self.manifest.num_templates], context)
        if found:
            shown = "; ".join(f"#{i} {names[i][:40]!r}{'...' if len(names[i]) > 40 else ''} ({n} tokens)"
                              for i, n in found[:3])
            warnings.warn(f"{len(found)} class name(s) are longer than CLIP's {context}-token context and are read "
                          f"cut to {context} tokens, as the original SED does: {shown}", stacklevel=3)

    @property
    def tokenizer(self):
        """The CLIP tokenizer of these artifacts (loaded on first use)."""
        if self._tokenizer is None:
            from .tokenizer import ClipTokenizer

            self._tokenizer = ClipTokenizer.from_file(self.folder / self.manifest.text["tokenizer"])
        return self._tokenizer

    def _lookup_embeddings(self, names: list[str]) -> np.ndarray | None:
        m = self.manifest
        shipped = EmbeddingCache(self.folder / TEXT_FOLDER)
        for cache in (shipped, self.cache):
            found = embed_names_cached(cache, names, m)
            if found is not None:
                return found
        return None

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """CLIP tokens of prompts, [M,L] int64 at these artifacts' context length."""
        return self.tokenizer(texts, context_length=self.manifest.context_length)

    def encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """Unit text embeddings [M,D] of token rows, through the text stage (loaded on first use)."""
        backend = self.backends[TEXT_STAGE].load()
        return backend.to_host(backend.run({TOKENS: tokens})[TEXT_EMBEDDINGS])

    # images -----------------------------------------------------------------------------------

    def __call__(self, image: ImageSource) -> Segmentation:
        """Segment one image (a path, encoded bytes, a PIL image or an RGB array)."""
        if self.text is None or self.names is None:
            raise ConfigError("no vocabulary set: call pipeline.set_vocabulary(names) before segmenting")
        start = time.perf_counter()
        rgb = load_image(image, self.max_pixels)
        x = preprocess(rgb, self.manifest.preprocessing)
        timings = {"preprocess": time.perf_counter() - start}
        scores, ids, kept = self.run_stages(x, timings)
        post = time.perf_counter()
        labels = label_map(scores, ids, rgb.shape[0], rgb.shape[1])
        timings["postprocess"] = time.perf_counter() - post
        timings["total"] = time.perf_counter() - start
        stage_time = sum(timings[s] for s in IMAGE_STAGES)
        timings["host"] = timings["total"] - stage_time - timings["preprocess"] - timings["postprocess"]
        engines = {stage: self.backends[stage].describe() for stage in IMAGE_STAGES}
        return Segmentation(labels=labels, names=self.names, kept=kept, scores=scores, score_ids=ids, timings=timings,
                            engines=engines, backend=self.backend, topk=self.topk if self.cer else None)

    def run_stages(self, image: np.ndarray, timings: dict[str, float] | None = None):
        """The five image stages with pruning between them.

        Every stage's inputs are found by name among the outputs of the stages before it (the
        stage contract names them so), plus `keep`, which the host computes.

        Args:
            image: the model input, [1,3,S,S] float32.
            timings: filled with seconds per stage (optional).

        Returns:
            (scores [K,h,w] float32 sigmoid, ids [K] int64, kept ids per decoder stage).
        """
        with self._serial if self._serial is not None else contextlib.nullcontext():
            return self._run_stages(image, {} if timings is None else timings)

    def _run_stages(self, image: np.ndarray, timings: dict[str, float]):
        if self._uploaded is not self.text:
            self._upload_text()
        tensors = {IMAGE: image, TEXT: self.text_input}
        alive = np.arange(len(self.names), dtype=np.int64)
        kept = []
        for stage in IMAGE_STAGES:
            contract = STAGE[stage]
            backend = self.backends[stage].load()
            if contract.prunes:
                keep = self._keep(backend, tensors[contract.keep_from], len(alive))
                alive = alive[keep]
                kept.append(alive)
                tensors[KEEP] = keep
            tensors.update(backend.run({name: tensors[name] for name in contract.inputs}))
            timings[stage] = backend.last_run_seconds
        logits = self.backends[IMAGE_STAGES[-1]].to_host(tensors[LOGITS])
        return sigmoid(logits), alive, tuple(kept)

    def _keep(self, backend: StageBackend, topk, num_classes: int) -> np.ndarray:
        if not self.cer:
            return np.arange(num_classes, dtype=np.int32)
        return self.keep_policy(backend.to_host(topk), self.topk, num_classes)

    # lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_arguments(**given) -> None:
    """`ConfigError` for an argument of `Pipeline.from_artifacts` of the wrong type (one line, not a TypeError)."""
    expected = {"path": (str, os.PathLike), "backend": (str,), "topk": (int, type(None)), "cer": (bool,),
                "options": (BackendOptions, type(None))}
    for name, kinds in expected.items():
        value = given[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
            raise ConfigError(f"Pipeline.from_artifacts: {name} must be {wanted}, got {type(value).__name__}")


def embed_names_cached(cache: EmbeddingCache, names: list[str], manifest: Manifest) -> np.ndarray | None:
    """The cached embeddings of `names` for these artifacts' text weights, or None."""
    key = embedding_key(manifest.text["weights_digest"], names, IMAGENET_TEMPLATES[: manifest.num_templates])
    found = cache.get(key)
    if found is not None and found.shape == (len(names), manifest.num_templates, manifest.embed_dim):
        return found
    return None
