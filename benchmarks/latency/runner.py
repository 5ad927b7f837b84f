"""sed-bench's runs: every backend over every setting, one child process per backend.

`run_benchmark(options)` measures and returns the raw results; `report.build_report` turns
them into the report. Per backend: a child process (`worker.worker_main`) loads the pipeline
once, times the text side once, then runs each setting (warm-up calls, then timed calls of the whole
pipeline). A backend that is not installed or cannot serve the artifacts is recorded as skipped with
its reason; a setting that fails (out of memory, say) is recorded as failed; a worker that dies is
restarted for the settings after the one it died in. The run itself never fails for either.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from sed_deploy.core.contract import IMAGE_STAGES
from sed_deploy.core.errors import ConfigError
from sed_deploy.core.machine import machine_info
from sed_deploy.core.manifest import Manifest
from sed_deploy.core.optional import EXTRA_OF
from sed_deploy.core.progress import Steps
from sed_deploy.runtime.backends import canonical_name, tensorrt_unavailable_reason
from sed_deploy.runtime.backends.base import RUNTIME_PRECISIONS, check_precision
from sed_deploy.runtime.backends.openvino import precision_unavailable_reason as openvino_precision_reason
from sed_deploy.runtime.backends.options import BackendOptions, options_for
from sed_deploy.runtime.decode import DEFAULT_MAX_PIXELS
from sed_deploy.runtime.vocabulary import vocabulary_from_arg

from .multiply_adds import artifacts_work, matmul_peak
from .precision_errors import error_tables, is_reduced, is_reference
from .settings import Setting, execution_order, load_images, plan_settings
from .worker import BackendTask, run_backend, worker_main

PYTHON_MODULE = {"ort": "onnxruntime", "torch": "torch", "openvino": "openvino"}


@dataclass(frozen=True)
class BenchOptions:
    """What sed-bench was asked to measure (the CLI's arguments)."""

    artifacts: Path
    vocab: str = "pc459"
    backends: tuple[str, ...] = ("ort", "torch", "tensorrt")
    precisions: tuple[str | None, ...] = (None,)  # None: each backend's own default
    topks: tuple[int, ...] = (4, 8, 16)
    cer: bool = True
    baseline: bool = True
    keep: int | None = None
    images: tuple[str, ...] = ()
    warmup: int = 3
    iters: int = 20
    threads: int | None = None
    # each backend's settings (precision aside: it comes per row); a backend not here gets its defaults
    backend_options: dict[str, BackendOptions] = field(default_factory=dict)
    cache_dir: str | None = None
    text_classes: int = 20
    memory_limit_mb: float | None = None
    isolate: bool = True
    quiet: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS


def run_label(backend: str, precision: str | None) -> str:
    """The name of a backend at a precision in the report: "ort", or "ort fp16" for a chosen precision."""
    return backend if precision is None else f"{backend} {precision}"


def unavailable_reason(name: str, manifest: Manifest, folder: Path, precision: str | None = None) -> str | None:
    """Why backend `name` cannot run here (None if it may), without importing torch."""
    if precision in RUNTIME_PRECISIONS:
        try:
            check_precision(name, precision)
        except ConfigError as exc:
            return str(exc)
        if name == "openvino" and importlib.util.find_spec("openvino") is not None:
            reason = openvino_precision_reason(precision)
            if reason is not None:
                return f"not available on this CPU: {reason}"
    elif precision is not None and name != "tensorrt" and precision not in manifest.precisions:
        return f"the artifacts have no {precision} graphs (sed-export --precision {precision})"
    if name == "tensorrt":
        return tensorrt_unavailable_reason(manifest, folder, precision)
    module = PYTHON_MODULE.get(name)
    if module and importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install 'sed-deploy[{EXTRA_OF[module]}]')"
    return None


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = ", probably by the out-of-memory killer" if -code == signal.SIGKILL else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited with code {code}"


def drive_worker(task: BackendTask, on_message: Callable[[str, object], None], isolate: bool) -> str | None:
    """Run one worker to its end; returns None, or why it ended early (isolated runs only)."""
    if not isolate:
        run_backend(task, on_message)
        return None
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=worker_main, args=(task, sender), daemon=True)
    process.start()
    sender.close()
    finished = False
    try:
        while True:
            try:
                kind, payload = receiver.recv()
            except EOFError:
                break
            if kind == "done":
                finished = True
                break
            on_message(kind, payload)
    finally:
        receiver.close()
        process.join(timeout=None if finished else 30)
    return None if finished else describe_exit(process.exitcode)


class BackendRun:
    """Collects one backend's messages and keeps the progress bar moving."""

    def __init__(self, name: str, settings: list[Setting], calls_per_setting: int, steps: Steps) -> None:
        self.name, self.settings, self.calls, self.steps = name, settings, calls_per_setting, steps
        self.info: dict = {"status": "ok", "reason": None}
        self.results: list[dict] = []
        self.failures: list[dict] = []
        self.current: Setting | None = None
        self.seen = 0
        self.loaded = False

    @property
    def done_keys(self) -> set[str]:
        return {r["setting"]["key"] for r in self.results} | {f["setting"]["key"] for f in self.failures}

    def __call__(self, kind: str, payload) -> None:
        if kind == "loaded":
            self.loaded = True
            self.info.update(payload)
        elif kind == "text":
            self.info["text"] = payload
        elif kind == "skipped":
            self.info.update(status="skipped", reason=payload)
        elif kind == "begin":
            self.current, self.seen = Setting.from_dict(payload), 0
            self.steps.label(f"{self.name}: {self.current.label}")
        elif kind == "progress":
            self.seen += 1
            self.steps.advance()
        elif kind == "setting":
            self.results.append({"backend": self.name, **payload})
        elif kind == "setting_failed":
            self.fail(Setting.from_dict(payload["setting"]), payload["reason"])

    def fail(self, setting: Setting, reason: str) -> None:
        self.failures.append({"backend": self.name, "setting": setting.to_dict(), "reason": reason})
        self.steps.write(f"{self.name}: {setting.label} failed: {reason}")
        self.steps.advance(max(0, self.calls - self.seen) if setting == self.current else self.calls)
        self.seen = self.calls

    def remaining(self) -> list[Setting]:
        done = self.done_keys
        return [s for s in self.settings if s.key not in done]


def run_one_backend(name: str, task: BackendTask, settings: list[Setting], options: BenchOptions,
                    steps: Steps) -> BackendRun:
    """All settings of one backend, restarting the worker after a crash."""
    run = BackendRun(name, settings, options.warmup + options.iters, steps)
    while True:
        ended = drive_worker(task, run, options.isolate)
        left = run.remaining()
        if ended is None or run.info["status"] != "ok":
            break
        if not run.loaded or run.current is None:
            run.info.update(status="failed", reason=f"{ended} before the first setting")
            break
        if not left:
            break
        run.fail(run.current if run.current in left else left[0], f"{ended} during this setting")
        left = run.remaining()
        if not left:
            break
        task = replace(task, settings=tuple(s.to_dict() for s in left), measure_text=False)
    if run.info["status"] != "ok":
        steps.advance(len(run.remaining()) * run.calls)
    return run


def run_benchmark(options: BenchOptions) -> dict:
    """Measure every backend over every setting; returns the raw results (see `report.build_report`)."""
    folder = Path(options.artifacts)
    manifest = Manifest.load(folder)
    names = vocabulary_from_arg(options.vocab)
    # an unreadable image is a one-line error now, not a failed worker later
    load_images(list(options.images), options.max_pixels)
    settings = plan_settings(list(options.topks), options.cer, options.baseline, options.keep, manifest.topk)
    units = list(dict.fromkeys((canonical_name(b), p) for b in options.backends for p in options.precisions))
    started = time.time()
    raw = {"options": options, "manifest": manifest, "names": names, "settings": settings, "machine": machine_info(),
           "matmul_peak": matmul_peak(threads=options.threads), "backends": {}, "results": [], "failures": []}
    try:
        raw["work"] = {k: v.to_dict() for k, v in artifacts_work(manifest, folder, IMAGE_STAGES).items()}
        raw["work_error"] = None
    except Exception as exc:  # noqa: BLE001  (onnx missing or a graph it cannot infer: report, do not fail)
        raw["work"], raw["work_error"] = None, f"{type(exc).__name__}: {exc}".splitlines()[0]
    order = execution_order(settings)
    runnable = {(b, p): unavailable_reason(b, manifest, folder, p) for b, p in units}
    total = sum(len(order) * (options.warmup + options.iters) for r in runnable.values() if r is None)
    steps = Steps(total, "sed-bench", enabled=not options.quiet)
    # rows whose outputs are compared: reduced precisions, and the fp32 row of their backend
    compared = {(b, p) for b, p in units if runnable[b, p] is None and is_reduced(p)}
    compared |= {(b, p) for b, p in units if is_reference(b, p) and any(c[0] == b for c in compared)}
    outputs = tempfile.TemporaryDirectory(prefix="sed-bench-outputs-") if compared else None
    ran: list[tuple[str, str | None, str]] = []
    try:
        for backend, precision in units:
            name = run_label(backend, precision)
            if runnable[backend, precision] is not None:
                raw["backends"][name] = {"status": "skipped", "reason": runnable[backend, precision]}
                steps.write(f"{name}: skipped: {runnable[backend, precision]}")
                continue
            task = BackendTask(
                artifacts=str(folder), backend=backend, names=tuple(names),
                settings=tuple(s.to_dict() for s in order), images=tuple(options.images),
                warmup=options.warmup, iters=options.iters,
                options=replace(options_for(backend, options.backend_options.get(backend,
                                                                                 BackendOptions(threads=options.threads))),
                                precision=precision),
                cache_dir=options.cache_dir, text_classes=options.text_classes,
                memory_limit_mb=options.memory_limit_mb, max_pixels=options.max_pixels,
                outputs_dir=str(Path(outputs.name) / name) if outputs and (backend, precision) in compared else None)
            run = run_one_backend(name, task, order, options, steps)
            if run.info["status"] == "ok":
                ran.append((backend, precision, name))
            raw["backends"][name] = run.info
            raw["results"] += run.results
            raw["failures"] += run.failures
            if run.info["status"] != "ok":
                steps.write(f"{name}: {run.info['status']}: {run.info['reason']}")
        raw["precision_errors"] = error_tables(ran, Path(outputs.name)) if outputs else []
    finally:
        steps.close()
        if outputs is not None:
            outputs.cleanup()
    raw["seconds"] = round(time.time() - started, 1)
    return raw
