"""`sed-serve`: SED behind NVIDIA Triton Inference Server (PyTriton), or a model repository for NVIDIA's container."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sed_deploy.core.cli import ArgumentParser, add_common_args, bounded_int, positive_int, run
from sed_deploy.runtime.pipeline_args import add_pipeline_args, pipeline_settings

from .handler import Limits
from .server import ServeOptions, serve

EPILOG = """\
examples:
  sed-serve --artifacts artifacts/B --vocab ade150
  sed-serve --artifacts artifacts/B --vocab ade150 --instances 2 --address 0.0.0.0
  sed-serve --artifacts artifacts/B --write-repository model_repository      # for NVIDIA's Triton container

Model 'sed' (KServe v2, HTTP and gRPC): inputs image BYTES [1] (the encoded file), classes BYTES [N]
(optional, else --vocab), topk INT32 [1] (optional); outputs labels INT32 [H,W] and result BYTES [1]
(JSON). Health: /v2/health/live, /v2/models/sed/ready; metrics: :METRICS_PORT/metrics.
A client: sed-segment --server http://127.0.0.1:8000 --vocab ade150 street.jpg -o out/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="sed-serve", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", required=True, type=Path, help="folder written by sed-export")
    parser.add_argument("--vocab", help="the vocabulary of requests without classes: a file, a known name or an "
                                        "inline list (default: the one embedded at export)")
    server = parser.add_argument_group("server")
    server.add_argument("--instances", type=positive_int, default=1,
                        help="model instances, each with its own pipeline (default 1)")
    server.add_argument("--address", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    server.add_argument("--http-port", type=positive_int, default=8000, help="HTTP/REST port (default 8000)")
    server.add_argument("--grpc-port", type=positive_int, default=8001, help="gRPC port (default 8001)")
    server.add_argument("--metrics-port", type=positive_int, default=8002, help="Prometheus port (default 8002)")
    server.add_argument("--workspace", type=Path, help="PyTriton's working folder (default: a new one in "
                                                       "~/.cache/pytriton, removed at exit)")
    server.add_argument("--log-file", type=Path, help="tritonserver's log (default: echoed to stdout)")
    limits = parser.add_argument_group("limits of one request")
    limits.add_argument("--max-classes", type=positive_int, default=Limits.max_classes,
                        help=f"most class names a request may send (default {Limits.max_classes})")
    limits.add_argument("--vocab-cache", type=bounded_int(0, 1 << 20), default=64,
                        help="vocabularies of requests kept encoded, least recently used out (default 64)")
    limits.add_argument("--vocab-cache-mb", type=bounded_int(0, 1 << 20), default=512,
                        help="most megabytes of them (default 512)")
    repository = parser.add_argument_group("model repository for NVIDIA's Triton container (then exits)")
    repository.add_argument("--write-repository", type=Path, metavar="DIR",
                            help="write a model repository: one model per stage and the BLS model 'sed'")
    repository.add_argument("--platform", choices=["auto", "onnxruntime", "tensorrt"], default="auto",
                            help="stage models as TensorRT plans (engines from sed-build) or ONNX graphs "
                                 "(default auto: plans when engines exist for every stage)")
    add_pipeline_args(parser)
    add_common_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def job():
        if args.write_repository is not None:
            from .repository import write_repository

            write_repository(args.artifacts, args.write_repository, platform=args.platform,
                             instances=args.instances, vocab=args.vocab, precision=args.precision,
                             limits=Limits(args.max_classes, args.max_pixels), cer=args.cer,
                             topk=args.topk, say=say)
            return
        options = ServeOptions(
            artifacts=args.artifacts, vocab=args.vocab, instances=args.instances, address=args.address,
            http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
            limits=Limits(args.max_classes, args.max_pixels), vocab_cache_entries=args.vocab_cache,
            vocab_cache_bytes=args.vocab_cache_mb << 20, pipeline=pipeline_settings(args),
            workspace=args.workspace, log_file=args.log_file, quiet=args.quiet)
        serve(options, say=say)

    return run(job, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
