"""`sed-serve --write-repository`: a Triton model repository for NVIDIA's Triton container.

    DIR/image_encoder/config.pbtxt, 1/model.onnx (or model.plan)     one model per stage, the stage
    DIR/text_encoder/ cost/ decoder1/ decoder2/ decoder3/               contract's dynamic class axes as -1
    DIR/sed/config.pbtxt, 1/model.py, 1/artifacts/                    the Python-backend model: requests in,
                                                                        the CER loop through BLS calls

Stage models are `tensorrt_plan` when engines built by `sed-build` exist for every stage (one
TensorRT version and GPU: the container must have that TensorRT and run on that GPU), else
`onnxruntime_onnx` with the exported graphs. Every `config.pbtxt` is built as Triton's
`ModelConfig` protobuf (from tritonclient, the serve extra) and written in its text format, so it
parses as Triton parses it. The model `sed` runs `bls/model.py`: the same `RequestHandler` and
`Pipeline` as sed-serve, with stage backends that are BLS requests (`bls_backend.py`); its
`artifacts/` folder holds what the host side needs (manifest, tokenizer, embedded vocabularies,
the default vocabulary), not the graphs. The container's Python needs `sed-deploy[text]`.

The repository is written into a hidden folder beside DIR and renamed into place when complete;
an existing DIR is never overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sed_deploy.core.contract import STAGE_ORDER, TEXT_FOLDER, TEXT_STAGE
from sed_deploy.core.errors import ArtifactError, ConfigError
from sed_deploy.core.manifest import Manifest, StageSpec, TensorSpec
from sed_deploy.core.optional import require
from sed_deploy.runtime.engine_cache import EngineRecord, read_records
from sed_deploy.serve.protocol import CLASSES, IMAGE, LABELS, MODEL, RESULT, TOPK

from .handler import Limits
from .server import default_vocabulary

BLS_MODEL = Path(__file__).parent / "bls" / "model.py"
FILENAMES = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}
TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
         "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL", "bytes": "TYPE_STRING"}


def model_config_pb2():
    return require("tritonclient.grpc.model_config_pb2", "sed-serve --write-repository")


def config_text(config) -> str:
    """A ModelConfig in Triton's text format (`max_batch_size: 0` said, though proto3 omits zeros)."""
    text_format = require("google.protobuf.text_format", "sed-serve --write-repository")
    text = text_format.MessageToString(config)
    return text if config.max_batch_size else "max_batch_size: 0\n" + text


def parse_config(path: str | Path):
    """Parse a config.pbtxt as Triton does (raises google.protobuf.text_format.ParseError)."""
    text_format = require("google.protobuf.text_format", "sed-serve --write-repository")
    return text_format.Parse(Path(path).read_text(), model_config_pb2().ModelConfig())


def _add_tensor(field, tensor: TensorSpec, mc) -> None:
    field.add(name=tensor.name, data_type=mc.DataType.Value(TYPES[tensor.dtype]),
              dims=[d if isinstance(d, int) else -1 for d in tensor.shape])


def stage_config(spec: StageSpec, platform: str, profiles: int = 0):
    """The config of one stage model: no Triton batching (the stages have batch 1), dynamic axes -1."""
    mc = model_config_pb2()
    config = mc.ModelConfig(name=spec.name, platform=platform, max_batch_size=0,
                            default_model_filename=FILENAMES[platform])
    for tensor in spec.inputs:
        _add_tensor(config.input, tensor, mc)
    for tensor in spec.outputs:
        _add_tensor(config.output, tensor, mc)
    group = config.instance_group.add(count=1)
    if platform == "tensorrt_plan":
        group.kind = mc.ModelInstanceGroup.KIND_GPU
        group.profile.extend(str(i) for i in range(profiles))  # the instance picks the profile that fits
    else:
        group.kind = mc.ModelInstanceGroup.KIND_AUTO  # GPU where the container has one, else CPU
    return config


def sed_config(instances: int, limits: Limits, cer: bool, topk: int | None = None):
    """The config of the Python-backend model `sed` (the protocol of sed-serve)."""
    mc = model_config_pb2()
    config = mc.ModelConfig(name=MODEL, backend="python", max_batch_size=0)
    string, int32 = mc.DataType.Value("TYPE_STRING"), mc.DataType.Value("TYPE_INT32")
    config.input.add(name=IMAGE, data_type=string, dims=[1])
    config.input.add(name=CLASSES, data_type=string, dims=[-1], optional=True)
    config.input.add(name=TOPK, data_type=int32, dims=[1], optional=True)
    config.output.add(name=LABELS, data_type=int32, dims=[-1, -1])
    config.output.add(name=RESULT, data_type=string, dims=[1])
    config.instance_group.add(count=instances, kind=mc.ModelInstanceGroup.KIND_CPU)
    settings = {"max_classes": limits.max_classes, "max_pixels": limits.max_pixels, "cer": int(cer)}
    if topk is not None:  # the k of requests without `topk` (default: the export's)
        settings["topk"] = topk
    for key, value in settings.items():
        config.parameters[key].string_value = str(value)
    return config


def engine_set(manifest: Manifest, folder: Path, precision: str | None) -> dict[str, EngineRecord] | None:
    """Engines of one TensorRT version and GPU covering every stage (None if there is no such set)."""
    sets: dict[tuple, dict[str, EngineRecord]] = {}
    for record in read_records(folder):
        spec = manifest.stages.get(record.stage)
        if spec is None or record.graph_sha256 not in {spec.sha256, *(v.sha256 for v in spec.variants.values())}:
            continue  # stale: built from another export
        if precision is not None and record.precision != precision and record.stage != TEXT_STAGE:
            continue
        if not (folder / record.file).is_file():
            continue
        sets.setdefault((record.environment, record.precision), {})[record.stage] = record
    complete = [s for s in sets.values() if set(s) >= set(manifest.stages)]
    return complete[0] if complete else None


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # graphs are hundreds of MB: share them when on one filesystem
    except OSError:
        shutil.copyfile(source, target)


def write_repository(artifacts: str | Path, out: str | Path, platform: str = "auto", instances: int = 1,
                     vocab: str | None = None, precision: str | None = None, limits: Limits | None = None,
                     cer: bool = True, topk: int | None = None, say: Callable[[str], Any] = print) -> Path:
    """Write the model repository for `artifacts` into `out` (which must not exist yet)."""
    limits = limits or Limits()
    folder, out = Path(artifacts), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not empty; give a new folder for the model repository")
    manifest = Manifest.load(folder)
    plugins = sorted({p for spec in manifest.stages.values() for p in spec.plugins})
    if plugins:
        raise ConfigError(f"these artifacts use TensorRT plugin nodes ({', '.join(plugins)}), which the repository "
                          "does not load yet; export without --attention plugin")
    names = default_vocabulary(vocab, manifest, folder)
    engines = engine_set(manifest, folder, precision) if platform in ("auto", "tensorrt") else None
    if platform == "tensorrt" and engines is None:
        raise ArtifactError(f"no complete set of engines in {folder / 'engines'}: build them with "
                            f"sed-build {folder}" + (f" --precision {precision}" if precision else ""))
    kind = "tensorrt_plan" if engines else "onnxruntime_onnx"
    if kind == "onnxruntime_onnx":
        manifest.verify_files(folder, precision=precision)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        for stage in STAGE_ORDER:
            spec = manifest.stages[stage]
            version = staging / stage / "1"
            version.mkdir(parents=True)
            if engines:
                record = engines[stage]
                _link_or_copy(folder / record.file, version / FILENAMES[kind])
                config = stage_config(spec, kind, profiles=len(record.plan))
            else:
                file, _ = spec.graph(None if stage == TEXT_STAGE else precision)
                _link_or_copy(folder / file, version / FILENAMES[kind])
                config = stage_config(spec, kind)
            (staging / stage / "config.pbtxt").write_text(config_text(config))
        if topk is not None and not 1 <= topk <= manifest.topk:
            raise ConfigError(f"top-k must be between 1 and {manifest.topk} (the K these graphs were exported with), "
                              f"got {topk}")
        _write_sed_model(staging / MODEL, folder, manifest, names, instances, limits, cer, topk)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    where = (f"TensorRT plans built with TensorRT {next(iter(engines.values())).environment.tensorrt} for "
             f"{next(iter(engines.values())).environment.gpu}" if engines else "ONNX graphs (onnxruntime backend)")
    say(f"model repository written to {out}: {', '.join(STAGE_ORDER)} as {where}, and model '{MODEL}' "
        f"(Python backend, {instances} instance(s), {len(names)} default classes); run it with "
        f"tritonserver --model-repository {out} --disable-auto-complete-config (see deploy/README.md)")
    return out


def _write_sed_model(target: Path, folder: Path, manifest: Manifest, names: list[str], instances: int,
                     limits: Limits, cer: bool, topk: int | None) -> None:
    version = target / "1"
    host = version / "artifacts"
    (host / TEXT_FOLDER).mkdir(parents=True)
    shutil.copyfile(BLS_MODEL, version / "model.py")
    shutil.copyfile(folder / "manifest.json", host / "manifest.json")
    tokenizer = Path(manifest.text["tokenizer"])
    (host / tokenizer.parent).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / tokenizer, host / tokenizer)
    for cached in sorted((folder / TEXT_FOLDER).glob("*")):  # vocabularies embedded at export
        shutil.copyfile(cached, host / TEXT_FOLDER / cached.name)
    (host / "vocabulary.json").write_text(json.dumps(names, ensure_ascii=False, indent=1) + "\n")
    (target / "config.pbtxt").write_text(config_text(sed_config(instances, limits, cer, topk)))
