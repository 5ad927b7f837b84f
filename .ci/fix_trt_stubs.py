"""Make the generated `tensorrt-stubs` (10.13) parseable by mypy, in place.

The stubs are generated from the bindings and contain two kinds of invalid Python: parameters
named `in` (a keyword), and parameters without a default after ones with a default. Both are
rewritten (`in` -> `in_`, a missing default -> `= ...`); nothing else changes.

    python .ci/fix_trt_stubs.py .venv/trt-stubs
"""

import re
import sys
from pathlib import Path

KEYWORD_PARAM = re.compile(r"([(,] *)in: ")
SIGNATURE = re.compile(r"^(\s*def \w+\()(.*)(\)\s*->.*)$")


def fix_signature(line: str) -> str:
    match = SIGNATURE.match(line)
    if not match:
        return line
    params, seen_default = [], False
    for param in match.group(2).split(", "):
        if "=" in param:
            seen_default = True
        elif seen_default and ":" in param and not param.lstrip().startswith("*"):
            param = f"{param} = ..."
        params.append(param)
    return match.group(1) + ", ".join(params) + match.group(3)


def main(root: str) -> int:
    for path in Path(root).rglob("*.pyi"):
        text = KEYWORD_PARAM.sub(r"\1in_: ", path.read_text())
        path.write_text("\n".join(fix_signature(line) for line in text.split("\n")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
