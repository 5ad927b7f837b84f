"""`export_artifacts`: SED -> a folder of validated stage graphs, tokenizer files and `manifest.json`.

Everything is first written to a hidden staging folder inside the output folder: each graph is
exported, checked (onnx checker, TensorRT lint) and validated against PyTorch with ONNX Runtime
there. Only when every stage passed are the files moved into place (the old manifest removed
first) and the new manifest written, atomically, last. An interrupted or failed export removes its
staging folder and leaves the previous artifacts as they were.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sed_deploy.model import build_sed
from sed_deploy.model.sed import SED
from sed_deploy.model.text import text_weights_digest, tokenize
from sed_deploy.runtime.embedding_cache import EmbeddingCache, embedding_key
from sed_deploy.runtime.errors import ArtifactError, first_line
from sed_deploy.runtime.fileio import atomic_write
from sed_deploy.runtime.machine import versions
from sed_deploy.runtime.manifest import MANIFEST_NAME, TEXT_STAGE, Manifest, StageSpec, TensorSpec, file_sha256
from sed_deploy.runtime.optional import require
from sed_deploy.runtime.progress import Steps
from sed_deploy.runtime.prompts import IMAGENET_TEMPLATES
from sed_deploy.runtime.text_encoding import embed_names
from sed_deploy.runtime.vocabulary import read_vocabulary

from .lint import check_graph
from .memory_profile import TEXT_FIXED, activation_profile
from .onnx_export import export_stage_proto, graph_io, save_graph
from .stages import Stage, build_stages
from .validate import ort_session, validate_stage

# Class counts each graph is validated at (plus the vocabulary's size when one is given).
VALIDATION_COUNTS = {"tiny": (1, 2, 17, 150), "B": (2, 17), "L": (2, 17)}
TOKENIZER_DIR = "tokenizer"
PLUGIN_STAGES = ("decoder1", "decoder2", "decoder3")  # the stages with class attention
CLASS_ATTENTION_PLUGIN = "sed::linear_class_attention"
TEXT_DIR = "text"
EXPORT_PRECISIONS = ("fp32", "fp16")


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


def export_artifacts(options: ExportOptions) -> Manifest:
    """Export, check and validate every stage of SED; returns the manifest written."""
    out = _prepare_output(Path(options.output))
    staging = out / f".export-{os.getpid()}.partial"
    try:
        manifest = _export_into(options, staging)
        _publish(staging, out, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _export_into(options: ExportOptions, out: Path) -> Manifest:
    out.mkdir()
    names = read_vocabulary(options.vocab) if options.vocab else None
    model = build_sed(options.backbone, checkpoint=options.checkpoint, seed=options.seed)
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
        manifest.vocabularies[Path(options.vocab).stem] = _embed_vocabulary(manifest, out, names, options.quiet)
    return manifest


def current_manifest(options: ExportOptions) -> Manifest | None:
    """The manifest of `options.output` if it already describes this export, else None.

    It must have the same backbone, weights, opset, K and vocabulary, and intact graph files.
    """
    out = Path(options.output)
    try:
        manifest = Manifest.load(out)
        manifest.verify_files(out)
    except ArtifactError:
        return None
    if options.checkpoint is None:
        weights = {"weights": "random", "seed": options.seed}
    else:
        weights = {"weights": "checkpoint", "sha256": file_sha256(options.checkpoint)}
    same = (
        manifest.backbone == options.backbone
        and all(manifest.weights.get(k) == v for k, v in weights.items())
        and manifest.opset == options.opset
        and manifest.topk == options.topk
        and all(bool(manifest.stages[n].plugins) == (options.attention == "plugin") for n in PLUGIN_STAGES)
        and set(options.precisions) <= set(manifest.precisions)
        and (options.vocab is None or Path(options.vocab).stem in manifest.vocabularies)
    )
    return manifest if same else None


def _prepare_output(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ArtifactError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return out


def _publish(staging: Path, out: Path, manifest: Manifest) -> None:
    """Move the staged files into `out`, then write the manifest (the folder is valid again)."""
    with contextlib.suppress(FileNotFoundError):
        (out / MANIFEST_NAME).unlink()
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            target = out / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    manifest.save(out)


def _export_one(stage: Stage, out: Path, opset: int, counts: tuple[int, ...], steps: Steps,
                plugin: bool = False) -> StageSpec:
    name = stage.NAME
    final = out / f"{name}.onnx"
    start = time.perf_counter()
    steps.label(f"{name}: exporting")
    proto = export_stage_proto(stage, opset, plugin=plugin)
    steps.label(f"{name}: checking")
    check_graph(proto, stage.DYNAMIC, name)
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
        inputs=tuple(TensorSpec(n, *io_specs[n]) for n in stage.INPUTS),
        outputs=tuple(TensorSpec(n, *io_specs[n]) for n in stage.OUTPUTS),
        validation={"tolerance": 1e-4, "metric": "max_abs / max|torch|",
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
        "sot_token": 49406,
        "eot_token": 49407,
    }


def _embed_vocabulary(manifest: Manifest, out: Path, names: list[str], quiet: bool) -> dict:
    """Text embeddings of `names` through the exported text graph, stored under `text/`."""
    session = ort_session(out / manifest.stages["text_encoder"].file)

    def encode(tokens: np.ndarray) -> np.ndarray:
        return session.run(["text_embeddings"], {"tokens": tokens})[0]

    digest = manifest.text["weights_digest"]
    cache = EmbeddingCache(out / TEXT_DIR)
    embed_names(names, tokenize, encode, digest, manifest.num_templates, cache, show_progress=not quiet)
    key = embedding_key(digest, names, IMAGENET_TEMPLATES[: manifest.num_templates])
    return {"file": f"{TEXT_DIR}/{key}.npy", "classes": len(names), "key": key}
