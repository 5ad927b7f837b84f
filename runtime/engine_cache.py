"""The engine cache: where TensorRT engines of an artifacts folder live and when they may be used.

Engines are tied to the graph, the TensorRT version, the GPU (name and compute capability), the
precision and the optimization-profile plan. `engine_key` hashes all of them; an engine is stored as
`ENGINES_DIR/<stage>.<precision>.<key16>.engine` with a JSON sidecar holding everything it was built
from. The runtime uses an engine only if its sidecar matches the manifest's graph, the installed
TensorRT and the present GPU; anything else is stale or foreign and is never used. This module is
torch-free and TensorRT-free: `sed-build` writes the records, the TensorRT backend reads them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sed_deploy.core.contract import IMAGE_STAGES
from sed_deploy.core.manifest import Manifest

ENGINES_DIR = "engines"
RECORD_FORMAT = 1
PREFERENCE = ("fp16", "fp32")  # engine sets tried in this order when no precision is asked for


@dataclass(frozen=True)
class Environment:
    """What an engine is tied to besides its graph: TensorRT and the GPU."""

    tensorrt: str
    gpu: str
    compute_capability: str


@dataclass
class EngineRecord:
    """The sidecar of one engine file."""

    stage: str
    precision: str
    key: str
    graph_sha256: str
    environment: Environment
    plan: list[dict[str, Any]]  # the optimization profiles: [{input: [min, opt, max] shapes}]
    file: str
    plugins: list[str] = field(default_factory=list)
    build_seconds: float = 0.0
    graph_file: str = ""  # the ONNX file the engine was built from (an fp16 variant or the fp32 graph)
    computes: str = ""  # what the engine computes in ("fp32" for stages an fp16 set keeps in fp32); "" = precision
    dla_core: int | None = None  # the Orin DLA core the engine runs on (GPU fallback), None: the GPU
    built_at: float = 0.0  # time.time() of the build: the newest usable engine of a precision wins
    format: int = RECORD_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineRecord:
        return cls(**{**data, "environment": Environment(**data["environment"])})


def engine_key(graph_sha256: str, environment: Environment, precision: str, plan: list[dict[str, Any]],
               build: dict[str, Any] | None = None) -> str:
    """sha256 of everything an engine depends on: the graph, where it is built, the precision, the profiles
    and every builder setting that can change the engine (`build`: optimisation level, workspace, DLA core...)."""
    payload = json.dumps({"graph": graph_sha256, "env": asdict(environment), "precision": precision, "plan": plan,
                          "build": build or {}}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def engine_path(folder: str | Path, stage: str, precision: str, key: str) -> Path:
    return Path(folder) / ENGINES_DIR / f"{stage}.{precision}.{key[:16]}.engine"


def read_records(folder: str | Path) -> list[EngineRecord]:
    """Every readable engine sidecar of an artifacts folder (unreadable ones are skipped)."""
    records = []
    for path in sorted((Path(folder) / ENGINES_DIR).glob("*.engine.json")):
        try:
            records.append(EngineRecord.from_dict(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return records


def stale_reason(record: EngineRecord, manifest: Manifest, environment: Environment, folder: str | Path) -> str | None:
    """Why an engine may not be used with these artifacts here (None if it may)."""
    spec = manifest.stages.get(record.stage)
    if spec is None:
        return f"stage {record.stage} is not in the manifest"
    if record.graph_sha256 not in {spec.sha256, *(v.sha256 for v in spec.variants.values())}:
        return f"{record.stage}: built from another graph (the artifacts were re-exported)"
    if record.environment.tensorrt != environment.tensorrt:
        return f"{record.stage}: built with TensorRT {record.environment.tensorrt}, this is {environment.tensorrt}"
    if (record.environment.gpu, record.environment.compute_capability) != (environment.gpu,
                                                                           environment.compute_capability):
        return (f"{record.stage}: built for {record.environment.gpu} (sm {record.environment.compute_capability}), "
                f"this GPU is {environment.gpu} (sm {environment.compute_capability})")
    if not (Path(folder) / record.file).is_file():
        return f"{record.stage}: engine file {record.file} is missing"
    return None


def usable_engines(
    manifest: Manifest, folder: str | Path, environment: Environment
) -> tuple[dict[str, dict[str, EngineRecord]], list[str]]:
    """The usable engines by precision and stage (the newest build of each), and why others were refused.

    Returns:
        ({precision: {stage: record}}, [reasons]).
    """
    usable: dict[str, dict[str, EngineRecord]] = {}
    refused = []
    for record in sorted(read_records(folder), key=lambda r: r.built_at):
        reason = stale_reason(record, manifest, environment, folder)
        if reason is not None:
            refused.append(reason)
            continue
        usable.setdefault(record.precision, {})[record.stage] = record  # later (newer) builds win
    return usable, refused


def choose_engines(
    manifest: Manifest, folder: str | Path, environment: Environment, precision: str | None = None
) -> tuple[dict[str, EngineRecord], list[str]]:
    """The engine set a pipeline runs, and why other engines were refused.

    With `precision` given, the engines of that precision. Without: the fp16 set when it is complete
    for the image stages (it is the faster one, built on purpose by sed-build --precision fp16, each
    graph checked against fp32 at export), else the fp32 set (possibly incomplete: the caller says
    which stages lack an engine). A set never mixes precisions.
    """
    usable, refused = usable_engines(manifest, folder, environment)
    if precision is not None:
        return usable.get(precision, {}), refused
    for candidate in PREFERENCE:
        found = usable.get(candidate, {})
        if all(stage in found for stage in IMAGE_STAGES):
            return found, refused
    return usable.get("fp32", {}), refused


def select_profile(plan: list[dict[str, Any]], shapes: dict[str, tuple[int, ...]]) -> int:
    """Index of the first profile whose [min, max] contains every given input shape.

    Raises:
        ValueError: no profile fits (the caller turns it into a clear error).
    """
    for index, profile in enumerate(plan):
        fits = all(
            all(lo <= s <= hi for lo, s, hi in zip(low, shape, high, strict=True))
            for name, (low, _, high) in profile.items()
            if (shape := shapes.get(name)) is not None
        )
        if fits:
            return index
    raise ValueError(f"no optimization profile covers {shapes}")
