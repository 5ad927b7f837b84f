"""One backend's share of sed-bench: load the pipeline once, time the text side, run every setting.

`run_backend(task, emit)` does the work and reports through `emit(kind, payload)`:

| kind | payload |
|---|---|
| `loaded` | seconds to load the five image stages, the backend name, matmul rate measured here, what runs each stage |
| `text` | the one-time text cost (see `measure_text`) |
| `begin` | the setting about to run |
| `progress` | 1 per pipeline call (warm-up or timed) |
| `setting` | raw results of one setting (`run_setting`) |
| `setting_failed` | {"setting", "reason"}: a setting that raised (e.g. out of memory) |
| `skipped` | one line: why the backend cannot run here |

sed-bench runs it in a child process per backend (`worker_main`), so that a backend's memory, its
imports (torch only for the torch backend) and a crash stay its own; `--no-isolate` runs it in the
sed-bench process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sed_deploy.core.contract import COST, DECODERS, IMAGE_STAGES, TEXT_FOLDER, TEXT_STAGE
from sed_deploy.core.errors import SedDeployError, first_line
from sed_deploy.runtime.backends.options import BackendOptions
from sed_deploy.runtime.decode import DEFAULT_MAX_PIXELS
from sed_deploy.runtime.embedding_cache import EmbeddingCache
from sed_deploy.runtime.pipeline import Pipeline, embed_names_cached, topk_union
from sed_deploy.runtime.text_encoding import embed_names

from .forced_keep import forced_keep
from .measure import PeakRss, available_memory_mb, limit_address_space
from .multiply_adds import matmul_peak
from .precision_errors import record_outputs, save_outputs
from .settings import Setting, load_images

Emit = Callable[[str, object], None]
TIMING_KEYS = ("preprocess", *IMAGE_STAGES, "postprocess", "host", "total")
# what a failing setting may raise besides SedDeployError: allocation failures of numpy and torch
RUN_ERRORS = (SedDeployError, MemoryError, RuntimeError)
# the matrix-multiply library each backend's own rate is measured with (the run also measures numpy and onnxruntime)
MATMUL_LIBRARY = {"ort": "onnxruntime", "torch": "torch"}


@dataclass(frozen=True)
class BackendTask:
    """Everything a worker needs (plain data: it crosses a process boundary)."""

    artifacts: str
    backend: str
    names: tuple[str, ...]
    settings: tuple[dict, ...]
    images: tuple[str, ...] = ()
    warmup: int = 3
    iters: int = 20
    options: BackendOptions = field(default_factory=BackendOptions)  # the backend's settings, precision included
    cache_dir: str | None = None
    text_classes: int = 20
    measure_text: bool = True
    memory_limit_mb: float | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    # where to save the outputs of the first timed call per image, for `precision_errors` (None: not saved)
    outputs_dir: str | None = None


def measure_text(pipeline: Pipeline, names: list[str], sample: int) -> dict:
    """The one-time text cost: load the text stage, encode a sample of the vocabulary, then the vocabulary.

    The sample (the first `sample` names, never cached) is always encoded, so every report has a
    fresh measurement; the whole vocabulary comes from the embedding cache when it is there (then
    its encoding time is estimated from the sample), else it is encoded now and that is measured.
    """
    manifest = pipeline.manifest
    text = {"sample_classes": 0, "sample_seconds": None, "sample_error": None}
    start = time.perf_counter()
    pipeline.backends[TEXT_STAGE].load()
    text["load_seconds"] = round(time.perf_counter() - start, 3)
    chosen = names[: max(0, sample)]
    if chosen:
        try:
            start = time.perf_counter()
            # the pipeline's own tokenizer and text stage, without any cache
            embed_names(chosen, pipeline.tokenize, pipeline.encode_tokens, manifest.text["weights_digest"],
                        manifest.num_templates, cache=None, show_progress=False)
            text.update(sample_classes=len(chosen), sample_seconds=round(time.perf_counter() - start, 3))
        except (SedDeployError, ImportError) as exc:
            text["sample_error"] = first_line(exc)
    if text["sample_seconds"] is not None:
        text["estimated_vocabulary_seconds"] = round(text["sample_seconds"] / len(chosen) * len(names), 1)
    cached = any(embed_names_cached(cache, names, manifest) is not None
                 for cache in (EmbeddingCache(pipeline.folder / TEXT_FOLDER), pipeline.cache))
    start = time.perf_counter()
    pipeline.set_vocabulary(names, show_progress=False)
    text["vocabulary_source"] = "cache" if cached else "encoded"
    text["vocabulary_seconds"] = round(time.perf_counter() - start, 3)
    return text


def configure(pipeline: Pipeline, setting: Setting) -> None:
    pipeline.cer = setting.cer
    pipeline.topk = setting.topk or pipeline.manifest.default_topk
    pipeline.keep_policy = forced_keep(setting.keep) if setting.forced else topk_union


def _device_memory(pipeline: Pipeline, reset: bool) -> float | None:
    """Peak device memory (MiB) of the torch backend on CUDA; None elsewhere (not measured)."""
    device = getattr(pipeline.backends[COST].options, "device", "cpu")
    if pipeline.backend != "torch" or not str(device).startswith("cuda"):
        return None
    import torch  # already imported by the torch backend

    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def run_setting(pipeline: Pipeline, setting: Setting, images: list[np.ndarray], warmup: int, iters: int,
                tick: Callable[[], None], outputs_dir: str | None = None) -> dict:
    """Warm-up calls, then `iters` timed calls of the whole pipeline, cycling over `images`.

    With `outputs_dir`, the outputs of the first timed call on each image are saved under
    `<outputs_dir>/<setting key>/` (between calls: the timings are the pipeline's own).

    Returns:
        {"setting", "iterations", "samples": seconds per timing key, "classes": classes alive per
        stage per iteration, "peak_rss_mb", "rss_scope", "device_memory_mb"}.
    """
    configure(pipeline, setting)
    count = len(images)
    for i in range(warmup):
        pipeline(images[(i - warmup) % count])
        tick()
    peak = PeakRss()
    peak.reset()
    _device_memory(pipeline, reset=True)
    samples = {key: [] for key in TIMING_KEYS}
    classes = {stage: [] for stage in IMAGE_STAGES[1:]}
    for i in range(iters):
        result = pipeline(images[i % count])
        for key in TIMING_KEYS:
            samples[key].append(result.timings[key])
        classes[COST].append(len(pipeline.names))
        if outputs_dir is not None and i < count:
            save_outputs(Path(outputs_dir) / setting.key, i, record_outputs(result))
        for stage, kept in zip(DECODERS, result.kept, strict=True):
            classes[stage].append(int(len(kept)))
        tick()
    return {"setting": setting.to_dict(), "iterations": iters, "samples": samples, "classes": classes,
            "peak_rss_mb": peak.peak_mb(), "rss_scope": peak.scope,
            "device_memory_mb": _device_memory(pipeline, reset=False)}


def _load(task: BackendTask, emit: Emit) -> Pipeline | None:
    start = time.perf_counter()
    try:
        pipeline = Pipeline.from_artifacts(task.artifacts, backend=task.backend, options=task.options,
                                           cache_dir=task.cache_dir, max_pixels=task.max_pixels)
    except (SedDeployError, ImportError) as exc:
        emit("skipped", first_line(exc))
        return None
    seconds = round(time.perf_counter() - start, 3)
    library = MATMUL_LIBRARY.get(pipeline.backend)
    peak = matmul_peak((library,), threads=task.options.threads) if library else None
    emit("loaded", {"backend": pipeline.backend, "load_seconds": seconds, "matmul_peak": peak,
                    "engines": pipeline.engines})
    return pipeline


def run_backend(task: BackendTask, emit: Emit) -> None:
    """Load, time the text side, run each setting of `task`; everything goes through `emit`."""
    pipeline = _load(task, emit)
    if pipeline is None:
        return
    try:
        names = list(task.names)
        if task.measure_text:
            try:
                emit("text", measure_text(pipeline, names, task.text_classes))
            except (SedDeployError, ImportError) as exc:
                emit("skipped", f"cannot encode the vocabulary: {first_line(exc)}")
                return
        else:
            pipeline.set_vocabulary(names, show_progress=False)
        images = load_images(list(task.images), task.max_pixels)
        for data in task.settings:
            setting = Setting.from_dict(data)
            emit("begin", setting.to_dict())
            try:
                emit("setting", run_setting(pipeline, setting, images, task.warmup, task.iters,
                                            lambda: emit("progress", 1), task.outputs_dir))
            except RUN_ERRORS as exc:
                emit("setting_failed", {"setting": setting.to_dict(), "reason": _failure(exc, task)})
    finally:
        pipeline.close()


def _failure(exc: BaseException, task: BackendTask, limit: int = 300) -> str:
    reason = first_line(exc)
    reason = reason if len(reason) <= limit else reason[: limit - 3] + "..."
    lowered = reason.lower()
    if isinstance(exc, MemoryError) or "alloc" in lowered or "memory" in lowered:
        limit = f" (memory limit {task.memory_limit_mb:.0f} MiB)" if task.memory_limit_mb else ""
        return f"out of memory{limit}: {reason}"
    return reason


def worker_main(task: BackendTask, conn) -> None:
    """Entry point of the child process: `run_backend` with messages sent over `conn`.

    The child's address space is capped first (`memory_limit_mb`; None: 90 % of the memory
    available now, 0: no cap), so that running out of memory fails a setting instead of inviting
    the kernel's out-of-memory killer.
    """
    limit = task.memory_limit_mb
    if limit is None:
        available = available_memory_mb()
        limit = 0.9 * available if available else 0
    if limit:
        limit_address_space(limit)
        task = replace(task, memory_limit_mb=limit)
    try:
        run_backend(task, lambda kind, payload: conn.send((kind, payload)))
        conn.send(("done", None))
    finally:
        conn.close()

