"""The schema of `manifest.json`: the field types the manifest's dataclasses declare, checked by pydantic,
plus the checks that span fields (the stage contract, default_topk <= topk, the image shape).

A manifest can be edited by hand, damaged, or come from another tool. `core.manifest` declares each
field with the annotated types below; pydantic checks a file against them in strict JSON mode (no
"17" for 17, no true for 1), and `contract_problem` then checks what one field cannot say alone:
every stage of the contract is there with exactly its inputs and outputs and their integer dtypes,
K and k agree, the image input is the pre-processing size. The first violation becomes one
`ArtifactError` line naming the field, e.g.
`manifest.json: stages.decoder1.inputs: expected the inputs keep, embedding, volume, guidance4, got ...`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Strict, ValidationError

from .contract import CONTEXT_LENGTH, DTYPES, IMAGE, IMAGE_ENCODER, INTEGER_TENSORS, MAX_TEMPLATES, MAX_TOPK, STAGES
from .errors import ArtifactError

# The stage contract as the manifest must describe it: stage -> (input names, output names)
STAGE_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {s.name: (s.inputs, s.outputs) for s in STAGES}
GRAPH_PRECISIONS = ("fp32", "fp16")  # a stage's own graph; int8 graphs are variants
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HINT = "; re-export the artifacts with sed-export"


def fail(where: str, message: str) -> ArtifactError:
    return ArtifactError(f"manifest.json: {where}: {message}{_HINT}")


def kind(value: Any) -> str:
    """How a JSON value reads to a person: "a whole number", "text", "a list", ..."""
    return {bool: "true/false", int: "a whole number", float: "a number", str: "text", list: "a list",
            tuple: "a list", dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _whole(low: int, high: int | None = None) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"expected a whole number {span}, got {value}")
        return value

    return check


def Whole(low: int, high: int | None = None) -> Any:  # noqa: N802  (a type, spelt as one)
    """A JSON whole number (never true/false, never "17") from `low` to `high`."""
    return Annotated[int, Strict(), AfterValidator(_whole(low, high))]


def _relative_file(value: str) -> str:
    pure = PurePosixPath(value.replace("\\", "/"))
    if not value or pure.is_absolute() or ".." in pure.parts or "\0" in value:
        raise ValueError(f"expected a file inside the artifacts folder, got {value!r}")
    return value


def _sha256(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ValueError("expected 64 lower-case hex digits")
    return value


def _shape(value: tuple) -> tuple:
    if not value or not all((isinstance(d, int) and not isinstance(d, bool) and d >= 1) or (isinstance(d, str) and d)
                            for d in value):
        raise ValueError(f"expected a list of sizes (whole numbers) and axis names, got {list(value)!r}"[:200])
    return tuple(value)


def _dtype(value: str) -> str:
    if value not in DTYPES:
        raise ValueError(f"expected {' or '.join(DTYPES)}, got {value!r}")
    return value


def _graph_precision(value: str) -> str:
    if value not in GRAPH_PRECISIONS:
        raise ValueError(f"expected {' or '.join(GRAPH_PRECISIONS)}, got {value!r}")
    return value


def _rgb(positive: bool) -> Callable[[tuple], tuple]:
    def check(value: tuple) -> tuple:
        if len(value) != 3 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise ValueError(f"expected 3 numbers (R, G, B), got {list(value)!r}"[:200])
        if positive and min(value) <= 0:
            raise ValueError(f"expected 3 positive numbers, got {list(value)!r}")
        return tuple(float(v) for v in value)

    return check


def _as_tuple(value: Any) -> tuple:
    """Before-validator: a JSON list as a tuple (strict validation takes no list for a tuple)."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list, got {kind(value)}")
    return tuple(value)


Text = Annotated[str, Strict()]
RelativeFile = Annotated[str, Strict(), AfterValidator(_relative_file)]
Sha256 = Annotated[str, Strict(), AfterValidator(_sha256)]
Shape = Annotated[tuple[Any, ...], BeforeValidator(_as_tuple), AfterValidator(_shape)]
Dtype = Annotated[str, Strict(), AfterValidator(_dtype)]
GraphPrecision = Annotated[str, Strict(), AfterValidator(_graph_precision)]
Mean = Annotated[tuple[Any, ...], BeforeValidator(_as_tuple), AfterValidator(_rgb(positive=False))]
Std = Annotated[tuple[Any, ...], BeforeValidator(_as_tuple), AfterValidator(_rgb(positive=True))]
Opset = Whole(7)
TopK = Whole(1, MAX_TOPK)
Templates = Whole(1, MAX_TEMPLATES)
Context = Whole(2, CONTEXT_LENGTH)
ImageSize = Whole(32, 8192)
Side = Whole(1, 65536)
Positive = Whole(1)

# pydantic's error type -> what the field should have been
_EXPECTED = {
    "int_type": "a whole number", "int_from_float": "a whole number", "string_type": "text",
    "bool_type": "true/false", "float_type": "a number", "list_type": "a list", "tuple_type": "a list",
    **dict.fromkeys(("dict_type", "dataclass_type", "dataclass_exact_type", "typed_dict_type", "model_type"),
                    "an object"),
}
_OTHER = {"missing": "missing", "json_invalid": "not valid JSON", "recursion_loop": "nested too deeply"}


def _message(error: Mapping[str, Any]) -> str:
    kind_of = error["type"]
    if kind_of in _EXPECTED:
        return f"expected {_EXPECTED[kind_of]}, got {kind(error.get('input'))}"
    if kind_of == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return _OTHER.get(kind_of) or f"{error['msg']} (got {kind(error.get('input'))})"


def schema_error(exc: ValidationError) -> ArtifactError:
    """The first problem pydantic found, as one `ArtifactError` line naming the field."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "top level"
    extra = ("extra_forbidden", "unexpected_keyword_argument")  # (dataclasses say the second)
    if first["type"] in extra:  # every unknown field of the same object, in one line
        parent = first["loc"][:-1]
        names = sorted(str(e["loc"][-1]) for e in errors if e["type"] in extra and e["loc"][:-1] == parent)
        return fail(".".join(map(str, parent)) or "top level", f"unknown field(s) {names}")
    return fail(where, _message(first))


def stage_names_problem(stages: Any) -> ArtifactError | None:
    """The stages of the contract, none missing and none unknown (checked before the stages themselves)."""
    if not isinstance(stages, dict):
        return None  # the field check says what it is instead
    missing = [s for s in STAGE_IO if s not in stages]
    if missing:
        return fail("stages", f"missing stage(s) {', '.join(missing)}")
    extra = [s for s in stages if s not in STAGE_IO]
    if extra:
        return fail("stages", f"unknown stage(s) {', '.join(map(str, extra))}")
    return None


def contract_problem(manifest: Any) -> ArtifactError | None:
    """What a field-by-field check cannot see: the stage contract, K >= k, the image input's size."""
    if manifest.default_topk > manifest.topk:
        return fail("default_topk", f"expected a whole number between 1 and {manifest.topk}, "
                                    f"got {manifest.default_topk}")
    pre = manifest.preprocessing
    if pre.max_long_side < pre.short_side:
        return fail("preprocessing.max_long_side", f"expected a whole number between {pre.short_side} and 65536, "
                                                   f"got {pre.max_long_side}")
    stages: Mapping[str, Any] = manifest.stages
    problem = stage_names_problem(stages)
    if problem is not None:
        return problem
    for name, (inputs, outputs) in STAGE_IO.items():
        spec = stages[name]
        if spec.name != name:
            return fail(f"stages.{name}.name", f"expected {name!r}, got {spec.name!r}")
        for key, tensors, expected in (("inputs", spec.inputs, inputs), ("outputs", spec.outputs, outputs)):
            names = [t.name for t in tensors]
            if sorted(names) != sorted(expected) or len(set(names)) != len(names):
                return fail(f"stages.{name}.{key}",
                            f"expected the {key} {', '.join(expected)}, got {', '.join(names) or 'none'}")
            for i, tensor in enumerate(tensors):
                wanted = INTEGER_TENSORS.get(tensor.name)
                if wanted is not None and tensor.dtype != wanted:
                    return fail(f"stages.{name}.{key}.{i}.dtype", f"expected {wanted} for {tensor.name}, "
                                                                  f"got {tensor.dtype!r}")
    image = list(stages[IMAGE_ENCODER].input(IMAGE).shape)
    size = pre.image_size
    if image != [1, 3, size, size]:
        return fail(f"stages.{IMAGE_ENCODER}.inputs.{IMAGE}.shape",
                    f"expected [1, 3, {size}, {size}] (preprocessing.image_size), got {image}")
    return None
