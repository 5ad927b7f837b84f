"""`python -m sed_deploy.benchmarks.sample_images PATH.png | DIR/`: the demo's sample photographs.

`PATH.png` gets the astronaut photograph (NASA, public domain); a path ending in `/` (a folder) gets
the four colour photographs that ship with scikit-image (astronaut, coffee, chelsea,
immunohistochemistry), e.g. as the calibration images of `make bench`'s int8 export. scikit-image
is installed by the `demo` extra; nothing is downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from sed_deploy.core.errors import SedDeployError
from sed_deploy.core.fileio import atomic_write
from sed_deploy.core.optional import require

PHOTOS = ("astronaut", "coffee", "chelsea", "immunohistochemistry")


def write_sample(path: Path, photo: str = "astronaut") -> Path:
    data = require("skimage.data", "the demo's sample image")
    with atomic_write(path) as f:
        Image.fromarray(getattr(data, photo)()).save(f, format="PNG")
    return path


def write_samples(folder: Path) -> list[Path]:
    """Every photo of `PHOTOS` as `folder/<name>.png`."""
    folder.mkdir(parents=True, exist_ok=True)
    return [write_sample(folder / f"{name}.png", name) for name in PHOTOS]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sed_deploy.benchmarks.sample_images PATH.png | DIR/", file=sys.stderr)
        return 2
    try:
        if args[0].endswith("/"):
            written = write_samples(Path(args[0]))
            print(f"{len(written)} sample images written to {args[0]}")
        else:
            print(f"sample image written to {write_sample(Path(args[0]))}")
    except (SedDeployError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
