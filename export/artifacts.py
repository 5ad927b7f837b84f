"""`export_artifacts`: SED -> a folder of validated stage graphs, tokenizer files and `manifest.json`.

Everything is first written to a hidden staging folder inside the output folder
(`.export-PID-XXXX.partial`, locked by its process): each graph is exported, checked (onnx checker,
TensorRT lint, the opset asked for) and validated against PyTorch with ONNX Runtime there. Only when
every stage passed are the files moved into place (the old manifest removed first) and the new
manifest written, atomically, last: a folder with a manifest is always complete, whenever the
process was killed. A failed, interrupted (Ctrl-C) or terminated (SIGTERM) export removes its
staging folder and leaves the previous artifacts as they were; one killed with SIGKILL leaves it
behind, and the next export into that folder removes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sed_deploy.core.contract import (
    DECODERS,
    EOT_TOKEN,
    IMAGE_ENCODER,
    IMAGE_STAGES,
    MANIFEST_NAME,
    MAX_TOPK,
    SOT_TOKEN,
    TEXT_EMBEDDINGS,
    TEXT_FOLDER,
    TEXT_STAGE,
    TOKENS,
)
from sed_deploy.core.errors import ArtifactError, CheckpointError, ConfigError, first_line
from sed_deploy.core.fileio import LOCK_NAME, StagingDir, atomic_write, fsync_dir, reclaim_stale
from sed_deploy.core.machine import versions
from sed_deploy.core.manifest import Manifest, StageSpec, TensorSpec, file_sha256
from sed_deploy.core.optional import require
from sed_deploy.core.progress import Steps
from sed_deploy.model import build_sed
from sed_deploy.model.config import POOLINGS
from sed_deploy.model.sed import SED
from sed_deploy.model.text import text_weights_digest, tokenize
from sed_deploy.runtime.embedding_cache import EmbeddingCache, embedding_key
from sed_deploy.runtime.name_repair import check_unique, normalize_names
from sed_deploy.runtime.prompts import IMAGENET_TEMPLATES
from sed_deploy.runtime.text_encoding import embed_names
from sed_deploy.runtime.vocabulary import known_vocabulary, read_vocabulary

from .calibration import (
    DEFAULT_CALIB_COUNT,
    DEFAULT_CALIB_VOCAB,
    calibration_digest,
    calibration_images,
    record_feeds,
)
from .int8 import INT8_STAGES, INT8_TOLERANCE, write_int8_variant
from .lint import check_graph
from .memory_profile import TEXT_FIXED, activation_profile
from .onnx_export import export_stage_proto, graph_io, save_graph
from .stages import Stage, build_stages
from .validate import FP32_TOLERANCE, ort_session, validate_stage

# Class counts each graph is validated at (plus the vocabulary's size when one is given).
VALIDATION_COUNTS = {"tiny": (1, 2, 17, 150), "B": (2, 17), "L": (2, 17)}
TOKENIZER_DIR = "tokenizer"
PLUGIN_STAGES = DECODERS  # the stages with class attention
CLASS_ATTENTION_PLUGIN = "sed::linear_class_attention"
EXPORT_PRECISIONS = ("fp32", "fp16", "int8")
# The dynamo exporter builds opset 18 graphs and converts them; below 17 the conversion fails and it
# silently keeps 18, so only what is really written is offered (each graph's opset is checked).
SUPPORTED_OPSETS = range(17, 22)
STAGING_PREFIX = "export"


@dataclass(frozen=True)
class ExportOptions:
    """What `sed-export` was asked to do."""

    backbone: str
    output: Path
    checkpoint: Path | None = None
    vocab: str | None = None
    opset: int = 17
    topk: int = 16
    default_topk: int = 8
    seed: int = 0
    class_counts: tuple[int, ...] | None = None
    quiet: bool = False
    attention: str = "reference"  # or "plugin": decoders with the TensorRT class-attention plugin node
    precisions: tuple[str, ...] = ("fp32",)  # fp32 graphs always; "fp16" adds checked float16 variants
    pooling: int = 1  # p of the decoders' p x p class-attention pooling (`model.config.POOLINGS`)
    calib_images: Path | None = None  # int8: folder of calibration images (required with "int8")
    calib_count: int = DEFAULT_CALIB_COUNT  # int8: how many of them (the first by name)
    calib_vocab: str = DEFAULT_CALIB_VOCAB  # int8: the vocabulary the calibration pipeline runs with
    int8_tolerance: float = INT8_TOLERANCE  # int8: largest relative error vs fp32 a stage may have


def check_options(options: ExportOptions) -> None:
    """Raise `ConfigError` for options no export can satisfy (before anything is built)."""
    if options.opset not in SUPPORTED_OPSETS:
        raise ConfigError(f"opset {options.opset} is not supported: the exporter writes opsets "
                          f"{SUPPORTED_OPSETS[0]} to {SUPPORTED_OPSETS[-1]} (17 for TensorRT 10.3 / JetPack 6)")
    if not 1 <= options.topk <= MAX_TOPK:
        raise ConfigError(f"--topk must be between 1 and {MAX_TOPK} (TensorRT's TopK limit), got {options.topk}")
    if options.pooling not in POOLINGS:
        raise ConfigError(f"class-attention pooling must be one of {POOLINGS}, got {options.pooling!r}")
    if options.calib_images is not None and "int8" not in options.precisions:
        raise ConfigError("--calib-images is for int8 graphs only; add --precision int8 (or drop --calib-images)")
    if "int8" in options.precisions and options.calib_images is None:
        raise ConfigError("--precision int8 needs calibration images: add --calib-images DIR (a few typical images)")
    if options.calib_count < 1:
        raise ConfigError(f"--calib-count must be at least 1, got {options.calib_count}")
    if not options.int8_tolerance > 0:
        raise ConfigError(f"--int8-tolerance must be above 0, got {options.int8_tolerance}")


def export_artifacts(options: ExportOptions) -> Manifest:
    """Export, check and validate every stage of SED; returns the manifest written."""
    check_options(options)
    names = export_vocabulary(options.vocab) if options.vocab else None
    calibration = _calibration_set(options)
    out = _prepare_output(Path(options.output))
    with StagingDir(out, STAGING_PREFIX) as staging:
        manifest = _export_into(options, staging.path, names)
        if calibration is not None:
            _add_int8(manifest, staging.path, options, *calibration)
        _publish(staging.path, out, manifest)
    return manifest


def _calibration_set(options: ExportOptions) -> tuple[list[Path], list[str]] | None:
    """The calibration images and vocabulary of an int8 export (checked before anything is built)."""
    if "int8" not in options.precisions:
        return None
    return calibration_images(options.calib_images, options.calib_count), export_vocabulary(options.calib_vocab)


def _add_int8(manifest: Manifest, out: Path, options: ExportOptions, images: list[Path], names: list[str]) -> None:
    """Calibrate on the images, then give every image stage its int8 variant (in place)."""
    start = time.perf_counter()
    label, text = _calibration_text(manifest, out, options, names)
    feeds = record_feeds(manifest, out, images, text, names, INT8_STAGES, quiet=options.quiet)
    calibration = {"digest": calibration_digest(images, names), "images": len(images), "vocabulary": label,
                   "classes": len(names), "method": "minmax", "record_seconds": round(time.perf_counter() - start, 1)}
    steps = Steps(len(IMAGE_STAGES), "int8", enabled=not options.quiet)
    try:
        for stage in IMAGE_STAGES:
            spec = manifest.stages[stage]
            steps.label(f"{stage}: int8 graph")
            started = time.perf_counter()
            variant = write_int8_variant(spec, out, feeds.pop(stage, []), calibration, options.int8_tolerance)
            manifest.stages[stage] = replace(spec, variants={**spec.variants, "int8": variant})
            if variant.fallback:
                steps.write(f"{stage:<14} int8: {variant.fallback}: this stage stays fp32")
            else:
                steps.write(f"{stage:<14} {time.perf_counter() - started:6.1f} s   int8 graph checked against fp32 "
                            f"on {variant.check['cases']} calibration image(s): max relative error "
                            f"{variant.check['max_rel']:.1e}, cosine {variant.check['min_cosine']:.5f} "
                            f"(tolerance {variant.check['tolerance']:.2g})")
            steps.advance()
    finally:
        steps.close()


def _calibration_text(manifest: Manifest, out: Path, options: ExportOptions, names: list[str]):
    """(manifest label, [T,P,D] embeddings) of the calibration vocabulary: the export's --vocab when it
    has the same names, else embedded now and recorded as a vocabulary of the artifacts."""
    key = embedding_key(manifest.text["weights_digest"], names, IMAGENET_TEMPLATES[: manifest.num_templates])
    for label, entry in manifest.vocabularies.items():
        if entry.get("key") == key:
            return label, EmbeddingCache(out / TEXT_FOLDER).get(key)
    label = vocabulary_label(options.calib_vocab)
    if label in manifest.vocabularies:  # another vocabulary of the same name
        label = f"{label}-calibration"
    manifest.vocabularies[label] = _embed_vocabulary(manifest, out, names, options.quiet)
    return label, EmbeddingCache(out / TEXT_FOLDER).get(key)


def export_vocabulary(vocab: str) -> list[str]:
    """The names embedded at export: a file or a known name (a misspelt name must not become one class
    embedded in the artifacts), repaired as the runtime repairs them (so the runtime finds them under
    the names it looks up), duplicates refused."""
    given = read_vocabulary(vocab)
    names, _ = normalize_names(given)
    check_unique(names, given)
    return names


def vocabulary_label(vocab: str) -> str:
    """The manifest's name for a --vocab argument: the file's stem, or the known name."""
    path = Path(vocab)
    if path.is_file() or known_vocabulary(vocab) is None:
        return path.stem
    return vocab.lower()


def _export_into(options: ExportOptions, out: Path, names: list[str] | None) -> Manifest:
    model = build_sed(options.backbone, checkpoint=options.checkpoint, seed=options.seed,
                      attention_pooling=options.pooling)
    counts = tuple(options.class_counts or VALIDATION_COUNTS.get(options.backbone, (2, 17)))
    if names and len(names) not in counts:
        counts += (len(names),)
    stages = build_stages(model, options.topk)
    steps = Steps(len(stages), "export", enabled=not options.quiet)
    specs = {}
    try:
        for name, stage in stages.items():
            plugin = options.attention == "plugin" and name in PLUGIN_STAGES
            specs[name] = _export_one(stage, out, options.opset, counts, steps, plugin)
            specs[name] = _add_variants(specs[name], out, options.precisions, counts, steps)
            steps.advance()
    finally:
        steps.close()
    manifest = Manifest(
        backbone=options.backbone,
        config=model.config.to_dict(),
        weights=dict(model.weights),
        opset=options.opset,
        topk=options.topk,
        default_topk=min(options.default_topk, options.topk),
        num_templates=model.config.num_templates,
        embed_dim=model.config.embed_dim,
        context_length=model.config.context_length,
        preprocessing=model.config.preprocessing,
        text=_write_text_assets(model, out),
        stages=specs,
        exporter={"versions": versions(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    )
    if names:
        manifest.vocabularies[vocabulary_label(options.vocab)] = _embed_vocabulary(manifest, out, names,
                                                                                    options.quiet)
    return manifest


def current_manifest(options: ExportOptions) -> Manifest | None:
    """The manifest of `options.output` if it already describes this export, else None.

    It must have the same backbone, weights (the checkpoint's sha256), opset, K, pooling, attention,
    precisions and vocabulary (by content: the embedding key of its names), and intact graph files.
    """
    check_options(options)
    out = Path(options.output)
    weights = {"weights": "random", "seed": options.seed}
    if options.checkpoint is not None:
        weights = {"weights": "checkpoint", "sha256": checkpoint_sha256(options.checkpoint)}
    names = export_vocabulary(options.vocab) if options.vocab else None
    try:
        manifest = Manifest.load(out)
        manifest.verify_files(out)
    except ArtifactError:
        return None
    same = (
        manifest.backbone == options.backbone
        and all(manifest.weights.get(k) == v for k, v in weights.items())
        and manifest.opset == options.opset
        and manifest.topk == options.topk
        and manifest.config.get("attention_pooling", 1) == options.pooling
        and all(bool(manifest.stages[n].plugins) == (options.attention == "plugin") for n in PLUGIN_STAGES)
        and set(options.precisions) <= set(manifest.precisions)
        and (names is None or _has_vocabulary(manifest, out, names))
        and ("int8" not in options.precisions or _same_calibration(manifest, options))
    )
    return manifest if same else None


def checkpoint_sha256(path: str | Path) -> str:
    """sha256 of a checkpoint file; `CheckpointError` if it is missing or not a regular file."""
    path = Path(path)
    try:
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist or is not a file; give the .pth file")
        return file_sha256(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None


def _same_calibration(manifest: Manifest, options: ExportOptions) -> bool:
    images, names = _calibration_set(options) or ([], [])
    recorded = manifest.stages[IMAGE_ENCODER].variants["int8"].check.get("calibration", {})
    return recorded.get("digest") == calibration_digest(images, names)


def _has_vocabulary(manifest: Manifest, out: Path, names: list[str]) -> bool:
    key = embedding_key(manifest.text["weights_digest"], names, IMAGENET_TEMPLATES[: manifest.num_templates])
    return any(entry.get("key") == key and EmbeddingCache(out / TEXT_FOLDER).get(key) is not None
               for entry in manifest.vocabularies.values())


def _prepare_output(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"output {out} is an existing file, not a folder; give a folder with -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ArtifactError(f"cannot write to {out}: {exc.strerror or exc}") from None
    reclaim_stale(out, STAGING_PREFIX)
    _reclaim_legacy(out)
    return out


def _reclaim_legacy(out: Path) -> None:
    """Remove `.export-PID.partial` folders of earlier versions whose process is gone."""
    for path in out.glob(".export-*.partial"):
        pid = path.name[len(".export-"): -len(".partial")]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _publish(staging: Path, out: Path, manifest: Manifest) -> None:
    """Move the staged files into `out`, then the manifest, written in staging first (the folder is valid
    again only once every file it names is in place)."""
    try:
        with contextlib.suppress(FileNotFoundError):
            (out / MANIFEST_NAME).unlink()
        fsync_dir(out)
        for path in sorted(staging.rglob("*")):
            if path.is_file() and path.relative_to(staging) != Path(LOCK_NAME):
                target = out / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        manifest.save(staging)
        os.replace(staging / MANIFEST_NAME, out / MANIFEST_NAME)
    except OSError as exc:
        raise ArtifactError(f"cannot move the exported files into {out}: {exc.strerror or exc}; "
                            "the folder has no manifest until an export finishes") from None
    fsync_dir(out)


def _export_one(stage: Stage, out: Path, opset: int, counts: tuple[int, ...], steps: Steps,
                plugin: bool = False) -> StageSpec:
    name = stage.CONTRACT.name
    final = out / f"{name}.onnx"
    start = time.perf_counter()
    steps.label(f"{name}: exporting")
    proto = export_stage_proto(stage, opset, plugin=plugin)
    written = {o.domain: o.version for o in proto.opset_import}.get("")
    if written != opset:
        raise ArtifactError(f"stage {name}: the exporter wrote opset {written}, not the {opset} asked for; "
                            f"use --opset {SUPPORTED_OPSETS[0]} or later")
    steps.label(f"{name}: checking")
    check_graph(proto, stage.CONTRACT.dynamic, name)
    io_specs = graph_io(proto)
    save_graph(proto, final, data_name=f"{final.name}.data")
    del proto
    try:
        memory = {"activations": activation_profile(final, TEXT_FIXED if name == TEXT_STAGE else None)}
    except Exception as exc:  # an estimate for sed-build --dry-run must never fail an export
        memory = {"error": f"no activation profile: {first_line(exc)}"}
    steps.label(f"{name}: validating")
    cases = validate_stage(stage, final, counts, plugins=plugin)
    worst = max(c.worst() for c in cases)
    steps.write(f"{name:<14} {time.perf_counter() - start:6.1f} s   lint ok   max relative error {worst:.1e} "
                f"over {len(cases)} case(s) {[c.sizes for c in cases] if cases[0].sizes else ''}")
    return StageSpec(
        name=name,
        file=final.name,
        sha256=file_sha256(final),
        inputs=tuple(TensorSpec(n, *io_specs[n]) for n in stage.CONTRACT.inputs),
        outputs=tuple(TensorSpec(n, *io_specs[n]) for n in stage.CONTRACT.outputs),
        validation={"tolerance": FP32_TOLERANCE, "metric": "max_abs / max|torch|",
                    "cases": [{"sizes": c.sizes, "errors": c.errors} for c in cases]},
        plugins=(CLASS_ATTENTION_PLUGIN,) if plugin else (),
        memory=memory,
    )


def _add_variants(spec: StageSpec, out: Path, precisions: tuple[str, ...], counts: tuple[int, ...],
                  steps: Steps) -> StageSpec:
    """The stage with its reduced-precision graphs made and checked (the text stage stays fp32)."""
    if spec.name == TEXT_STAGE or "fp16" not in precisions:
        return spec
    from .fp16 import write_fp16_variant

    steps.label(f"{spec.name}: fp16 graph")
    variant = write_fp16_variant(spec, out, counts)
    if variant.fallback:
        steps.write(f"{spec.name:<14} fp16: {variant.fallback}: this stage stays fp32")
    else:
        steps.write(f"{spec.name:<14} fp16 graph checked against fp32: max relative error "
                    f"{variant.check['max_rel']:.1e} (tolerance {variant.check['tolerance']:.0e})")
    return replace(spec, variants={**spec.variants, "fp16": variant})


def _write_text_assets(model: SED, out: Path) -> dict:
    """Copy the tokenizer's BPE merges next to the graphs and describe the text side."""
    open_clip = require("open_clip", "the tokenizer files")
    source = Path(open_clip.tokenizer.default_bpe())
    target = out / TOKENIZER_DIR / source.name
    with atomic_write(target) as f, open(source, "rb") as src:
        shutil.copyfileobj(src, f)
    return {
        "weights_digest": text_weights_digest(model),
        "tokenizer": f"{TOKENIZER_DIR}/{source.name}",
        "tokenizer_sha256": file_sha256(target),
        "templates": "imagenet",
        "sot_token": SOT_TOKEN,
        "eot_token": EOT_TOKEN,
    }


def _embed_vocabulary(manifest: Manifest, out: Path, names: list[str], quiet: bool) -> dict:
    """Text embeddings of `names` through the exported text graph, stored under `text/`."""
    session = ort_session(out / manifest.stages[TEXT_STAGE].file)

    def encode(tokens: np.ndarray) -> np.ndarray:
        return session.run([TEXT_EMBEDDINGS], {TOKENS: tokens})[0]

    digest = manifest.text["weights_digest"]
    cache = EmbeddingCache(out / TEXT_FOLDER)
    embed_names(names, tokenize, encode, digest, manifest.num_templates, cache, show_progress=not quiet)
    key = embedding_key(digest, names, IMAGENET_TEMPLATES[: manifest.num_templates])
    return {"file": f"{TEXT_FOLDER}/{key}.npy", "classes": len(names), "key": key}
