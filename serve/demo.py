"""`python -m sed_deploy.serve.demo` (`make serve-demo`): sed-serve on an export, one client, stopped.

Starts `sed-serve` on free loopback ports, waits until model `sed` is ready, runs
`sed-segment --server` on the given images (label maps, overlays and JSON in the output folder,
as sed-segment writes them locally), then stops the server with SIGTERM.

    python -m sed_deploy.serve.demo --artifacts artifacts/B --vocab "person,sky,flag" photo.png -o out/serve-demo
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sed_deploy.core.cli import ArgumentParser, run
from sed_deploy.runtime.segment_cli import main as segment_main
from sed_deploy.serve.process import ServerProcess, sed_serve_command


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m sed_deploy.serve.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--artifacts", required=True, type=Path)
    parser.add_argument("--vocab", required=True)
    parser.add_argument("--backend", default="ort")
    parser.add_argument("-o", "--output", required=True, type=Path)
    args = parser.parse_args(argv)
    outcome = {"code": 0}

    def job() -> None:
        with tempfile.TemporaryDirectory(prefix="sed-serve-demo.") as tmp:
            command, url = sed_serve_command(["--artifacts", str(args.artifacts), "--vocab", args.vocab,
                                              "--backend", args.backend, "--log-file", f"{tmp}/triton.log"])
            server = ServerProcess(command, url, Path(tmp) / "sed-serve.log")
            print(f"starting sed-serve on {server.client.url} ...", flush=True)
            with server.start():
                print(f"ready after {server.start_seconds:.1f} s; sed-segment --server {server.client.url}", flush=True)
                outcome["code"] = segment_main(["--server", server.client.url, "--vocab", args.vocab,
                                                *map(str, args.images), "-o", str(args.output)])
            print(f"sed-serve stopped (exit code {server.process.returncode})")

    code = run(job)
    return code or outcome["code"]


if __name__ == "__main__":
    raise SystemExit(main())
