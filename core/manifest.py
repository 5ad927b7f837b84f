"""`manifest.json`: the description of an artifacts folder, and its schema (torch-free).

The stage contract reaches the runtime and the engine builder as data, through this file: every
stage's graph file and sha256, its inputs and outputs (dtypes, shapes with dynamic axes by name),
plus the model configuration, where the weights came from, the pre-processing constants, K of the
top-k outputs, and the versions that produced it. Reading a manifest of a newer format fails with
a clear message instead of guessing.

The fp32 graph of a stage is the reference and always present. Reduced-precision graphs made at
export (`sed-export --precision fp16`) are the stage's `variants`, each with the check that admitted
it; a stage whose reduced graph missed its tolerance records why and keeps its fp32 graph for that
precision, so every precision names one graph file per stage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from .contract import MANIFEST_NAME, STAGE_ORDER, TEXT_STAGE
from .errors import ArtifactError, first_line
from .fileio import write_json
from .manifest_schema import (
    Context,
    Dtype,
    GraphPrecision,
    ImageSize,
    Mean,
    Opset,
    Positive,
    RelativeFile,
    Sha256,
    Shape,
    Side,
    Std,
    Templates,
    Text,
    TopK,
    contract_problem,
    schema_error,
    stage_names_problem,
)

FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 16 << 20

# every object of the file: strict JSON types, no field that is not declared
STRICT = ConfigDict(strict=True, extra="forbid")


@with_config(ConfigDict(strict=True, extra="allow"))
class TextInfo(TypedDict):
    """The text side of the artifacts: the digest of the text tower's weights (keys of the embedding
    caches) and the tokenizer file; other keys (token ids, context) ride along."""

    weights_digest: Text
    tokenizer: RelativeFile


@dataclass(frozen=True)
class Preprocessing:
    """The settings of pre-processing, recorded in every manifest.

    Attributes:
        image_size: side of the square model input (768 for B and L).
        short_side: target of the shortest edge before that (640).
        max_long_side: cap on the longest edge after the first resize (2560).
        mean: per-channel mean in the 0-255 scale (RGB).
        std: per-channel std in the 0-255 scale (RGB).
    """

    __pydantic_config__ = STRICT

    image_size: ImageSize
    short_side: Side
    max_long_side: Side
    mean: Mean
    std: Std


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: numpy dtype name and shape (str = named dynamic axis)."""

    __pydantic_config__ = STRICT

    name: Text
    dtype: Dtype
    shape: Shape

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass(frozen=True)
class GraphVariant:
    """A reduced-precision graph of one stage, made and checked at export.

    Attributes:
        precision: "fp16" (later "int8").
        file: the graph, relative to the artifacts folder; the fp32 graph's when `fallback` is set.
        sha256: of that file.
        check: how it compared with the fp32 graph: {"max_rel", "tolerance", "cases", "outputs"}.
        fallback: why the stage stays fp32 at this precision ("" when the variant is used).
    """

    __pydantic_config__ = STRICT

    precision: Text
    file: RelativeFile
    sha256: Sha256
    check: dict[str, Any] = field(default_factory=dict)
    fallback: Text = ""


@dataclass(frozen=True)
class StageSpec:
    """One stage graph."""

    __pydantic_config__ = STRICT

    name: Text
    file: RelativeFile
    sha256: Sha256
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: GraphPrecision = "fp32"
    validation: dict[str, Any] = field(default_factory=dict)
    plugins: tuple[Text, ...] = ()  # TensorRT plugins the graph's custom nodes need ("sed::linear_class_attention")
    variants: dict[str, GraphVariant] = field(default_factory=dict)  # precision -> reduced-precision graph
    memory: dict[str, Any] = field(default_factory=dict)  # {"activations": ...} (export/memory_profile.py)

    def input(self, name: str) -> TensorSpec:
        return _named(self.inputs, name, f"stage {self.name} input")

    def output(self, name: str) -> TensorSpec:
        return _named(self.outputs, name, f"stage {self.name} output")

    def graph(self, precision: str | None = None) -> tuple[str, str]:
        """(file, sha256) of the graph to run at `precision` (None or "fp32": the fp32 graph).

        Raises:
            ArtifactError: the artifacts were exported without that precision.
        """
        if precision in (None, self.precision):
            return self.file, self.sha256
        variant = self.variants.get(precision)
        if variant is None:
            raise ArtifactError(f"stage {self.name} has no {precision} graph: export it with "
                                f"sed-export --precision {precision}")
        return variant.file, variant.sha256

    def runs_at(self, precision: str | None = None) -> str:
        """The precision the stage's graph for `precision` computes in (fp32 where the variant fell back)."""
        if precision in (None, self.precision):
            return self.precision
        variant = self.variants.get(precision)
        return self.precision if variant is None or variant.fallback else variant.precision


@dataclass
class Manifest:
    """Everything the runtime needs to know about an artifacts folder."""

    __pydantic_config__ = STRICT

    backbone: Text
    config: dict[str, Any]
    weights: dict[str, Any]
    opset: Opset
    topk: TopK
    default_topk: TopK
    num_templates: Templates
    embed_dim: Positive
    context_length: Context
    preprocessing: Preprocessing
    text: TextInfo
    stages: dict[str, StageSpec]
    exporter: dict[str, Any] = field(default_factory=dict)
    vocabularies: dict[str, dict[str, Any]] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = {name: asdict(spec) for name, spec in self.stages.items()}  # variants included
        return {"format_version": data.pop("format_version"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """A manifest from its JSON form, every field checked first (`manifest_schema`)."""
        return cls.from_json(json.dumps(data).encode())

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """A manifest from the bytes of manifest.json: the format version, then every field, then the
        contract (`manifest_schema`); the first problem is one `ArtifactError` line."""
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"manifest.json cannot be read: {first_line(exc)}; re-export the artifacts") from None
        if not isinstance(data, dict):
            raise ArtifactError("manifest.json is not a JSON object; re-export the artifacts")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ArtifactError("manifest.json has no integer format_version; re-export the artifacts")
        if version > FORMAT_VERSION:
            raise ArtifactError(
                f"manifest.json has format version {version}, newer than this sed-deploy reads "
                f"({FORMAT_VERSION}); upgrade sed-deploy or re-export with this version"
            )
        problem = stage_names_problem(data.get("stages"))
        if problem is not None:
            raise problem
        try:
            manifest = _ADAPTER.validate_json(raw)
        except ValidationError as exc:
            raise schema_error(exc) from None
        problem = contract_problem(manifest)
        if problem is not None:
            raise problem
        manifest.stages = {name: manifest.stages[name] for name in STAGE_ORDER}  # pipeline order
        return manifest

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        """The manifest of an artifacts folder (or a manifest file's path); `ArtifactError` with one line."""
        path = Path(folder)
        if not path.exists():
            raise ArtifactError(f"artifacts folder {path} does not exist: export it first (sed-export -o {path})")
        path = path / MANIFEST_NAME if path.is_dir() else path
        if not path.is_file():
            raise ArtifactError(f"no {MANIFEST_NAME} in {path.parent}: it is not an artifacts folder, or its export "
                                "did not finish; export it (sed-export)")
        try:
            size = path.stat().st_size
            if size > MAX_MANIFEST_BYTES:
                raise ArtifactError(f"{path} is {size >> 20} MiB, too large for a manifest; re-export the artifacts")
            raw = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}; re-export the artifacts") from None
        return cls.from_json(raw)

    @property
    def precisions(self) -> tuple[str, ...]:
        """Precisions the image stages all have a graph for: fp32, plus those exported."""
        images = [s for n, s in self.stages.items() if n != TEXT_STAGE]
        common = set.intersection(*(set(s.variants) for s in images)) if images else set()
        return ("fp32", *sorted(common))

    def verify_files(self, folder: str | Path, stages: tuple[str, ...] | None = None,
                     precision: str | None = None) -> None:
        """Raise `ArtifactError` if a stage graph of `precision` (default fp32; the text stage's is
        always fp32) is missing or its sha256 differs from the manifest."""
        for name in stages or tuple(self.stages):
            file, sha256 = self.stages[name].graph(None if name == TEXT_STAGE else precision)
            path = Path(folder) / file
            if not path.is_file():
                raise ArtifactError(f"stage {name}: graph file {path} is missing; re-export the artifacts")
            try:
                digest = file_sha256(path)
            except OSError as exc:
                raise ArtifactError(f"stage {name}: cannot read {path}: {exc.strerror or exc}") from None
            if digest != sha256:
                raise ArtifactError(
                    f"stage {name}: {path} does not match the manifest (sha256 differs); "
                    "the file was changed or the export was interrupted: re-export"
                )


def _named(tensors: tuple[TensorSpec, ...], name: str, what: str) -> TensorSpec:
    for tensor in tensors:
        if tensor.name == name:
            return tensor
    raise ArtifactError(f"{what} {name!r} is not in the manifest; re-export the artifacts")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_ADAPTER = TypeAdapter(Manifest)
