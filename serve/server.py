"""`sed-serve`'s server: model `sed` (a `RequestHandler` per instance) on Triton through PyTriton.

PyTriton starts the `tritonserver` bundled in its wheel (HTTP/REST and gRPC with the KServe v2
protocol, Prometheus metrics) and runs the inference functions bound to a model in this process,
one thread per model instance; Triton's Python-backend stubs forward the requests. Each instance
owns a `Pipeline` (its own backend sessions), so instances run side by side where the backend
releases the GIL (ONNX Runtime, TensorRT and numpy kernels do; the Python glue between stages does
not). All instances share one `VocabularyCache`.

The model is bound without batching (`max_batch_size` 0): the protocol's `image` is [1], one image
per request, and the stage graphs have batch 1 (the stage contract), so Triton has nothing to
batch; see README.md for what instances buy instead.

Three things PyTriton 0.7.0 does not do by itself and this module does: put the interpreter's
libpython on the loader path of the Python-backend stub; the two fixes of `pytriton_patches`
(the start race of several instances, one-line errors for refused requests); and stop cleanly on
SIGTERM (Kubernetes' stop signal) as on Ctrl-C, so no tritonserver or stub process outlives it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import sysconfig
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sed_deploy.core.errors import ConfigError, MissingDependencyError, VocabularyError
from sed_deploy.core.machine import gpu_info, usable_cpus
from sed_deploy.core.manifest import Manifest
from sed_deploy.core.optional import require
from sed_deploy.runtime.backends.options import BackendOptions
from sed_deploy.runtime.decode import DEFAULT_MAX_PIXELS
from sed_deploy.runtime.pipeline import Pipeline
from sed_deploy.runtime.pipeline_args import PipelineSettings
from sed_deploy.runtime.vocabulary import vocabulary_from_arg
from sed_deploy.serve.protocol import CLASSES, IMAGE, LABELS, MODEL, RESULT, TOPK

from . import pytriton_patches
from .handler import BadRequest, Limits, RequestHandler
from .vocab_cache import VocabularyCache

# Triton waits this long for in-flight requests and model unloading at exit. Shorter values leave
# Python-backend stubs running after tritonserver exits (they ignore SIGTERM).
EXIT_TIMEOUT_S = 30


@dataclass(frozen=True)
class ServeOptions:
    """Everything `serve` needs (sed-serve's options)."""

    artifacts: Path
    vocab: str | None = None
    instances: int = 1
    address: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    limits: Limits = Limits()
    vocab_cache_entries: int = 64
    vocab_cache_bytes: int = 512 << 20
    pipeline: PipelineSettings | None = None  # how the stages run (default: auto, the backend's defaults)
    workspace: Path | None = None
    log_file: Path | None = None
    quiet: bool = False


class Refused(Exception):
    """Raised inside PyTriton for a `BadRequest`; the patched stub answers it with its one line (HTTP 400)."""


def ensure_libpython_on_loader_path(env: dict | None = None) -> str:
    """Put this interpreter's libpython directory first on LD_LIBRARY_PATH (for the stub).

    Triton's Python-backend stub links `libpythonX.Y.so.1.0`. Interpreters such as pyenv's, uv's or
    conda's keep it in their own LIBDIR, off the loader path: the stub then fails to start, or
    loads another Python's library. PyTriton copies the environment into tritonserver when it
    starts it, so setting the variable before that is enough.

    Raises:
        ConfigError: this interpreter has no shared libpython.
    """
    env = os.environ if env is None else env
    libdir = sysconfig.get_config_var("LIBDIR")
    # the soname the stub links (libpython3.11.so.1.0); the unversioned .so may be absent (a -dev package)
    library = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY") or ""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libdir or not (Path(libdir) / library).is_file():
        raise ConfigError(
            f"this Python ({sys.executable}) has no shared libpython, which Triton's Python backend needs; "
            "use a Python built with --enable-shared (the system python3, or pyenv with "
            "PYTHON_CONFIGURE_OPTS=--enable-shared)")
    parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *parts])
    return libdir


def default_vocabulary(vocab: str | None, manifest: Manifest, folder: Path) -> list[str]:
    """--vocab, or else the one vocabulary embedded at export."""
    if vocab is not None:
        return vocabulary_from_arg(vocab)
    if len(manifest.vocabularies) != 1:
        embedded = ", ".join(manifest.vocabularies) or "none"
        raise VocabularyError(f"give the server's vocabulary with --vocab (the artifacts embed {embedded}); "
                              "requests can still send their own classes")
    (entry,) = manifest.vocabularies.values()
    sidecar = folder / Path(entry["file"]).with_suffix(".json")
    try:
        import json

        return list(json.loads(sidecar.read_text())["names"])
    except (OSError, ValueError, KeyError) as exc:
        raise VocabularyError(f"cannot read the embedded vocabulary's names from {sidecar} ({exc}); "
                              "give --vocab") from None


def build_handlers(options: ServeOptions, cache: VocabularyCache) -> list[RequestHandler]:
    """One pipeline and handler per instance; the default vocabulary is encoded once."""
    settings = options.pipeline or PipelineSettings("auto", BackendOptions(), None, True, DEFAULT_MAX_PIXELS)
    if settings.options.threads is None and options.instances > 1:
        threads = max(1, (usable_cpus() or 1) // options.instances)
        settings = replace(settings, options=replace(settings.options, threads=threads))
    handlers: list[RequestHandler] = []
    names: list[str] = []
    embeddings: np.ndarray | None = None
    for _ in range(options.instances):
        pipeline = Pipeline.from_artifacts(options.artifacts, **settings.kwargs())
        if embeddings is None:
            names = default_vocabulary(options.vocab, pipeline.manifest, Path(options.artifacts))
            if len(names) > options.limits.max_classes:
                raise ConfigError(f"the server's vocabulary has {len(names)} classes, more than --max-classes "
                                  f"{options.limits.max_classes}")
            pipeline.set_vocabulary(names, show_progress=not options.quiet)  # the disk cache, as sed-segment
            embeddings = pipeline.text
        pipeline.cache = cache  # per-request vocabularies: memory only, bounded
        handlers.append(RequestHandler(pipeline, names, embeddings, options.limits))
    return handlers


def infer_function(handler: RequestHandler):
    """The PyTriton inference function of one instance (a list of requests in, a list of outputs out)."""

    def infer(requests):
        responses = []
        for request in requests:
            try:
                responses.append(handler(request.data))
            except BadRequest as exc:
                raise Refused(pytriton_patches.REFUSED_MARK + str(exc)) from None
        return responses

    return infer


class _OneLineRefusals(logging.Filter):
    """PyTriton logs every exception of an inference function with its traceback; a refused request
    is routine for a server and gets one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if pytriton_patches.REFUSED_MARK in message:
            record.msg = "%s%s"
            record.args = (pytriton_patches.REFUSED_MARK, message.rsplit(pytriton_patches.REFUSED_MARK, 1)[1].strip())
        return True


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def serve(options: ServeOptions, say=print) -> None:
    """Load the pipelines, start Triton, serve until SIGTERM or Ctrl-C, stop everything."""
    try:
        triton_module = require("pytriton.triton", "sed-serve")
        model_config = require("pytriton.model_config", "sed-serve")
    except MissingDependencyError:
        raise MissingDependencyError("sed-serve needs PyTriton; install it with: pip install 'sed-deploy[serve]'") \
            from None
    ensure_libpython_on_loader_path()
    pytriton_patches.install()
    logging.getLogger("pytriton.proxy.inference").addFilter(_OneLineRefusals())
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    cache = VocabularyCache(options.vocab_cache_entries, options.vocab_cache_bytes)
    handlers = build_handlers(options, cache)
    first = handlers[0].pipeline
    config = triton_module.TritonConfig(
        http_address=options.address, http_port=options.http_port,
        grpc_address=options.address, grpc_port=options.grpc_port,
        metrics_address=options.address, metrics_port=options.metrics_port,
        allow_gpu_metrics=bool(gpu_info()), exit_timeout_secs=EXIT_TIMEOUT_S,
        log_file=options.log_file)
    tensor = model_config.Tensor
    triton = triton_module.Triton(config=config, workspace=options.workspace)
    try:
        triton.bind(
            model_name=MODEL,
            infer_func=[infer_function(h) for h in handlers],
            inputs=[tensor(name=IMAGE, dtype=np.bytes_, shape=(1,)),
                    tensor(name=CLASSES, dtype=np.bytes_, shape=(-1,), optional=True),
                    tensor(name=TOPK, dtype=np.int32, shape=(1,), optional=True)],
            outputs=[tensor(name=LABELS, dtype=np.int32, shape=(-1, -1)),
                     tensor(name=RESULT, dtype=np.bytes_, shape=(1,))],
            config=model_config.ModelConfig(batching=False),
            strict=True,
        )
        triton.run()
        host = options.address
        say(f"sed-serve: model '{MODEL}' ready at http://{host}:{options.http_port}/v2/models/{MODEL} "
            f"(gRPC {host}:{options.grpc_port}, metrics http://{host}:{options.metrics_port}/metrics); "
            f"{len(handlers)} instance(s) on {first.backend}, {len(first.names or [])} default classes; "
            "SIGTERM or Ctrl-C stops it")
        triton.serve()
    except KeyboardInterrupt:
        pass
    finally:
        triton.stop()
        for handler in handlers:
            handler.pipeline.close()
        say("sed-serve: stopped")
