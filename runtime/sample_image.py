"""`python -m sed_deploy.runtime.sample_image PATH`: write the demo's sample photograph to PATH.

The image is the astronaut photograph (NASA, public domain) that ships with scikit-image, installed
by the `demo` extra; nothing is downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from .errors import SedDeployError
from .fileio import atomic_write
from .optional import require


def write_sample(path: Path) -> Path:
    data = require("skimage.data", "the demo's sample image")
    with atomic_write(path) as f:
        Image.fromarray(data.astronaut()).save(f, format="PNG")
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sed_deploy.runtime.sample_image PATH.png", file=sys.stderr)
        return 2
    try:
        print(f"sample image written to {write_sample(Path(args[0]))}")
    except SedDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
