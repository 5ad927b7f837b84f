"""`python -m sed_deploy.benchmarks.latency.serve_load`: a load test of sed-serve over HTTP.

For each instance count it starts `sed-serve` on free loopback ports (a subprocess: this package
imports only the runtime), waits until model `sed` is ready, sends warm-up requests, then N requests
at concurrency C (C client threads, one request in flight each) with the same image and the
server's vocabulary, and stops the server with SIGTERM. It records every request's latency as the
client sees it (encoding, HTTP, queueing, the pipeline, decoding), the errors, the throughput over
the whole run, the server's start time and the machine's load average, and writes `report.json`
and `report.md`. Zero failed requests is the pass mark; the exit code is 1 otherwise.

    python -m sed_deploy.benchmarks.latency.serve_load --artifacts artifacts/tiny --instances 1,2 \\
        --requests 200 --concurrency 4 -o benchmarks/results/serve_tiny
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import itertools
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from sed_deploy.core.cli import ArgumentParser, positive_int, positive_ints, run
from sed_deploy.core.errors import ConfigError, SedDeployError, first_line
from sed_deploy.core.fileio import atomic_write, write_json
from sed_deploy.core.machine import machine_info
from sed_deploy.serve.client import SedClient
from sed_deploy.serve.process import ServerProcess, sed_serve_command

from .measure import summarize_ms

START_TIMEOUT_S = 600.0


def sed_serve(arguments: list[str], log: Path) -> ServerProcess:
    """`sed-serve ARGUMENTS` on free loopback ports, not started yet."""
    return ServerProcess(*sed_serve_command(arguments), log)


def load(url: str, image: bytes, requests: int, concurrency: int, warmup: int) -> dict:
    """Send `requests` requests from `concurrency` threads; latencies, errors and throughput."""
    client = SedClient(url)
    for _ in range(warmup):
        client.segment(image)
    latencies: list[float] = []
    pipeline: list[float] = []  # the server's own time per request (its result's timings): no HTTP, no queue
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            start = time.perf_counter()
            try:
                result = client.segment(image)
            except SedDeployError as exc:
                with lock:
                    errors.append(first_line(exc))
                continue
            with lock:
                latencies.append(time.perf_counter() - start)
                pipeline.append(result.timings["total"])

    load_before = os.getloadavg()
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - start
    return {"requests": requests, "concurrency": concurrency, "ok": len(latencies), "errors": len(errors),
            "error_examples": sorted(set(errors))[:5], "wall_s": round(wall, 3),
            "throughput_rps": round(len(latencies) / wall, 3),
            "latency_ms": summarize_ms(latencies) if latencies else {},
            "pipeline_ms": summarize_ms(pipeline) if pipeline else {},
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def test_image(width: int, height: int) -> bytes:
    """A deterministic PNG with structure (gradients and blocks), so classes differ across it."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                    ((x // 40 + y // 40) % 2) * 200], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def render_markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [f"# sed-serve load test: {report['artifacts']}", "",
             f"Machine: {machine['cpu']}, {machine['usable_cpus']} usable CPU threads, "
             f"{'GPUs: ' + ', '.join(g.get('name', '?') for g in machine['gpus']) if machine['gpus'] else 'no GPU'}; "
             f"Python {machine['python']}; sed-deploy {machine['versions'].get('sed-deploy')}, "
             f"onnxruntime {machine['versions'].get('onnxruntime')}, nvidia-pytriton {report['pytriton']}, "
             f"numpy {machine['versions'].get('numpy')}; {machine['date']}.", "",
             f"Command: `{machine['command']}`", "",
             f"Each request: one {report['image']} PNG ({report['image_bytes']:,} bytes), the server's vocabulary "
             f"({report['vocabulary']}), backend {report['backend']}; latency as the client sees it (HTTP, queue, "
             f"pipeline); {report['warmup']} warm-up request(s) first.", "",
             "| instances | threads per instance | requests | concurrency | ok | errors | p50 ms | p90 ms | p99 ms "
             "| mean ms | pipeline p50 ms | throughput req/s | server start s | load average before -> after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["runs"]:
        ms = row["latency_ms"]
        lines.append(f"| {row['instances']} | {row['threads'] or 'default'} | {row['requests']} | {row['concurrency']} "
                     f"| {row['ok']} | {row['errors']} | {ms.get('median', '-')} | {ms.get('p90', '-')} "
                     f"| {ms.get('p99', '-')} | {ms.get('mean', '-')} | {row['pipeline_ms'].get('median', '-')} "
                     f"| {row['throughput_rps']} | {row['start_s']} "
                     f"| {row['loadavg_before'][0]} -> {row['loadavg_after'][0]} |")
    lines += ["", "Latency is what the client waits: HTTP, Triton's queue (concurrency above the instance count "
                  "waits there) and the pipeline; *pipeline p50* is the server's own time for one request "
                  "(the `total` of its timings). Throughput is completed requests over the run's wall time. "
                  "The load average is the machine's (1 minute) just before and after each run: other work "
                  "shares these CPUs, so these are upper bounds of what sed-serve needs.", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m sed_deploy.benchmarks.latency.serve_load",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", required=True, type=Path, help="folder written by sed-export")
    parser.add_argument("--vocab", help="the server's vocabulary (default: the one embedded at export)")
    parser.add_argument("--backend", default="ort", help="sed-serve --backend (default ort)")
    parser.add_argument("--instances", type=positive_ints, default=(1, 2), help="instance counts (default 1,2)")
    parser.add_argument("--threads", type=positive_ints, help="CPU threads per stage and instance, comma-separated "
                                                               "to run each (default: sed-serve's choice)")
    parser.add_argument("--requests", type=positive_int, default=100, help="timed requests per run (default 100)")
    parser.add_argument("--concurrency", type=positive_int, default=4, help="requests in flight (default 4)")
    parser.add_argument("--warmup", type=positive_int, default=2, help="untimed requests first (default 2)")
    parser.add_argument("--size", default="640x480", help="test image WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder for report.json and report.md")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    failed = {"errors": 0}

    def job() -> None:
        try:
            width, height = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--size must look like 640x480, got {args.size!r}") from None
        image = test_image(width, height)
        runs = []
        with tempfile.TemporaryDirectory(prefix="serve_load.") as tmp:
            for instances, threads in itertools.product(args.instances, args.threads or (None,)):
                name = f"{instances}x{threads or 'default'}"
                server_args = ["--artifacts", str(args.artifacts), "--backend", args.backend,
                               "--instances", str(instances), "--workspace", f"{tmp}/workspace{name}",
                               "--log-file", f"{tmp}/triton{name}.log"]
                server_args += ["--vocab", args.vocab] if args.vocab else []
                server_args += ["--threads", str(threads)] if threads else []
                with sed_serve(server_args, Path(tmp) / f"serve{name}.log").start(START_TIMEOUT_S) as server:
                    result = load(server.client.url, image, args.requests, args.concurrency, args.warmup)
                runs.append({"instances": instances, "threads": threads, "start_s": round(server.start_seconds, 1),
                             **result})
                print(f"{instances} instance(s), threads {threads or 'default'}: {result['ok']} ok, "
                      f"{result['errors']} errors, p50 {result['latency_ms'].get('median')} ms, "
                      f"{result['throughput_rps']} req/s", flush=True)
        report = {"schema": "sed-serve-load/1", "artifacts": str(args.artifacts), "backend": args.backend,
                  "vocabulary": args.vocab or "embedded at export", "image": f"{width}x{height}",
                  "image_bytes": len(image), "warmup": args.warmup, "pytriton": _version("nvidia-pytriton"),
                  "machine": machine_info(), "runs": runs}
        write_json(args.output / "report.json", report)
        with atomic_write(args.output / "report.md", "w") as f:
            f.write(render_markdown(report))
        failed["errors"] = sum(r["errors"] for r in runs)
        if failed["errors"]:
            raise SedDeployError(f"{failed['errors']} request(s) failed; see {args.output / 'report.md'}")
        print(f"report written to {args.output / 'report.md'}")

    return run(job, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
