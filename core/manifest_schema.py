"""The schema of `manifest.json`, checked field by field before the runtime trusts a value of it.

A manifest can be edited by hand, damaged, or come from another tool. Every field the runtime reads
is checked here for presence and type, every stage of `STAGE_IO` must be there with exactly the
inputs and outputs the runtime feeds and reads (names and integer dtypes), file names must stay
inside the artifacts folder, and the pre-processing numbers must make sense. The first violation
becomes one `ArtifactError` line naming the field, e.g.
`manifest.json: stages.decoder1.inputs: expected the inputs keep, embedding, volume, guidance4, got ...`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from .contract import CONTEXT_LENGTH, DTYPES, IMAGE, IMAGE_ENCODER, INTEGER_TENSORS, MAX_TEMPLATES, MAX_TOPK, STAGES
from .errors import ArtifactError

# The stage contract as the manifest must describe it: stage -> (input names, output names)
STAGE_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {s.name: (s.inputs, s.outputs) for s in STAGES}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HINT = "; re-export the artifacts with sed-export"


def fail(where: str, message: str) -> ArtifactError:
    return ArtifactError(f"manifest.json: {where}: {message}{_HINT}")


def _kind(value: Any) -> str:
    return {bool: "true/false", int: "a whole number", float: "a number", str: "text", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def field(data: Mapping, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """`data[key]`, which must exist and be of `kind` (bool is never taken for int)."""
    path = f"{where}.{key}" if where else key
    if key not in data:
        raise fail(path, "missing")
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(_kind(k()) if k is not type(None) else "null" for k in kinds)
        raise fail(path, f"expected {names}, got {_kind(value)}")
    return value


def whole(data: Mapping, key: str, where: str, low: int = 1, high: int | None = None) -> int:
    value = field(data, key, int, where)
    if value < low or (high is not None and value > high):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise fail(f"{where}.{key}" if where else key, f"expected a whole number {span}, got {value}")
    return value


def relative_file(data: Mapping, key: str, where: str) -> str:
    """A file name inside the artifacts folder (no absolute path, no `..`)."""
    value = field(data, key, str, where)
    pure = PurePosixPath(value.replace("\\", "/"))
    if not value or pure.is_absolute() or ".." in pure.parts or "\0" in value:
        raise fail(f"{where}.{key}", f"expected a file inside the artifacts folder, got {value!r}")
    return value


def validate_manifest(data: Any) -> None:
    """Raise `ArtifactError` (one line) at the first field of `data` the runtime could not use."""
    if not isinstance(data, dict):
        raise fail("top level", f"expected an object, got {_kind(data)}")
    for key in ("backbone",):
        field(data, key, str, "")
    for key in ("config", "weights", "text", "stages", "preprocessing"):
        field(data, key, dict, "")
    for key in ("exporter", "vocabularies"):
        if key in data:
            field(data, key, dict, "")
    whole(data, "opset", "", 7)
    topk = whole(data, "topk", "", 1, MAX_TOPK)
    whole(data, "default_topk", "", 1, topk)
    whole(data, "num_templates", "", 1, MAX_TEMPLATES)
    whole(data, "embed_dim", "", 1)
    whole(data, "context_length", "", 2, CONTEXT_LENGTH)
    size = _check_preprocessing(data["preprocessing"])
    _check_text(data["text"])
    _check_stages(data["stages"], size)
    for name, entry in data.get("vocabularies", {}).items():
        if not isinstance(entry, dict):
            raise fail(f"vocabularies.{name}", f"expected an object, got {_kind(entry)}")


def _check_preprocessing(pre: dict) -> int:
    where = "preprocessing"
    size = whole(pre, "image_size", where, 32, 8192)
    short = whole(pre, "short_side", where, 1, 16384)
    whole(pre, "max_long_side", where, short, 65536)
    for key in ("mean", "std"):
        values = field(pre, key, list, where)
        if len(values) != 3 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise fail(f"{where}.{key}", f"expected 3 numbers (R, G, B), got {values!r}"[:200])
        if key == "std" and min(values) <= 0:
            raise fail(f"{where}.std", f"expected 3 positive numbers, got {values!r}")
    extra = set(pre) - {"image_size", "short_side", "max_long_side", "mean", "std"}
    if extra:
        raise fail(where, f"unknown field(s) {sorted(extra)}")
    return size


def _check_text(text: dict) -> None:
    field(text, "weights_digest", str, "text")
    relative_file(text, "tokenizer", "text")


def _check_stages(stages: dict, image_size: int) -> None:
    missing = [s for s in STAGE_IO if s not in stages]
    if missing:
        raise fail("stages", f"missing stage(s) {', '.join(missing)}")
    extra = [s for s in stages if s not in STAGE_IO]
    if extra:
        raise fail("stages", f"unknown stage(s) {', '.join(map(str, extra))}")
    for name, (inputs, outputs) in STAGE_IO.items():
        spec = stages[name]
        where = f"stages.{name}"
        if not isinstance(spec, dict):
            raise fail(where, f"expected an object, got {_kind(spec)}")
        if field(spec, "name", str, where) != name:
            raise fail(f"{where}.name", f"expected {name!r}, got {spec['name']!r}")
        relative_file(spec, "file", where)
        _check_sha(spec, where)
        _check_tensors(spec, "inputs", inputs, where)
        _check_tensors(spec, "outputs", outputs, where)
        if "precision" in spec and field(spec, "precision", str, where) not in ("fp32", "fp16"):
            raise fail(f"{where}.precision", f"expected fp32 or fp16, got {spec['precision']!r}")
        for key, kind in (("validation", dict), ("plugins", list), ("variants", dict)):
            if key in spec:
                field(spec, key, kind, where)
        for plugin in spec.get("plugins", []):
            if not isinstance(plugin, str):
                raise fail(f"{where}.plugins", f"expected plugin names, got {_kind(plugin)}")
        for precision, variant in spec.get("variants", {}).items():
            _check_variant(variant, f"{where}.variants.{precision}")
    image = stages[IMAGE_ENCODER]["inputs"][0]["shape"]
    if image != [1, 3, image_size, image_size]:
        raise fail(f"stages.{IMAGE_ENCODER}.inputs.{IMAGE}.shape",
                   f"expected [1, 3, {image_size}, {image_size}] (preprocessing.image_size), got {image}")


def _check_sha(spec: dict, where: str) -> None:
    if not _SHA256.fullmatch(field(spec, "sha256", str, where)):
        raise fail(f"{where}.sha256", "expected 64 lower-case hex digits")


def _check_tensors(spec: dict, key: str, expected: tuple[str, ...], where: str) -> None:
    items = field(spec, key, list, where)
    names = []
    for i, item in enumerate(items):
        at = f"{where}.{key}[{i}]"
        if not isinstance(item, dict):
            raise fail(at, f"expected an object, got {_kind(item)}")
        name = field(item, "name", str, at)
        dtype = field(item, "dtype", str, at)
        if dtype not in DTYPES or (name in INTEGER_TENSORS and dtype != INTEGER_TENSORS[name]):
            wanted = INTEGER_TENSORS.get(name, " or ".join(DTYPES))
            raise fail(f"{at}.dtype", f"expected {wanted} for {name}, got {dtype!r}")
        shape = field(item, "shape", list, at)
        if not shape or not all((isinstance(d, int) and not isinstance(d, bool) and d >= 1)
                                or (isinstance(d, str) and d) for d in shape):
            raise fail(f"{at}.shape", f"expected a list of sizes (whole numbers) and axis names, got {shape!r}"[:200])
        names.append(name)
    if sorted(names) != sorted(expected) or len(set(names)) != len(names):
        raise fail(f"{where}.{key}", f"expected the {key} {', '.join(expected)}, got {', '.join(names) or 'none'}")


def _check_variant(variant: Any, where: str) -> None:
    if not isinstance(variant, dict):
        raise fail(where, f"expected an object, got {_kind(variant)}")
    field(variant, "precision", str, where)
    relative_file(variant, "file", where)
    _check_sha(variant, where)
    if "check" in variant:
        field(variant, "check", dict, where)
    if "fallback" in variant:
        field(variant, "fallback", str, where)
    extra = set(variant) - {"precision", "file", "sha256", "check", "fallback"}
    if extra:
        raise fail(where, f"unknown field(s) {sorted(extra)}")
