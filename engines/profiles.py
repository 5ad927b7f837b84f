"""Optimization-profile plans over the class axis: a pure function of the manifest and the sizes.

A TensorRT engine with dynamic shapes is tuned for each profile's `opt` shape, so one wide profile
serves some class counts badly. The class axis is split into buckets (default 1-32, 33-128,
129-max): after category early rejection the decoder stages see a few tens of classes, so the small
buckets' `opt` sits there, while the top bucket's `opt` is the vocabulary size (the cost stage and
CER off see all classes). A decoder stage's profiles bucket its kept-class axis (T1, T2, T3); the
axis it gathers from may be anything up to the maximum. The text encoder gets one profile over
prompts per batch (M) and prompt length (L). The plan is recorded in every engine's sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass

from sed_deploy.core.errors import ConfigError
from sed_deploy.core.manifest import Manifest, StageSpec

DEFAULT_EDGES = (32, 128)
FALLBACK_MAX_CLASSES = 256  # no vocabulary known at all (more than ADE-150 and COCO-Stuff-171)
TEXT_BATCH = 256  # prompts per text-encoder call (runtime.text_encoding's batch size)
TEXT_OPT_LENGTH = 16  # prompts of the 80 templates are 5-20 tokens long


@dataclass(frozen=True)
class Buckets:
    """Ranges of a class axis: [(lo, hi)], ascending, covering 1..max; `top_opt` for the last."""

    ranges: tuple[tuple[int, int], ...]
    top_opt: int

    def opt(self, index: int) -> int:
        lo, hi = self.ranges[index]
        return self.top_opt if index == len(self.ranges) - 1 else (lo + hi) // 2


def parse_profiles(spec: str) -> tuple[int, ...]:
    """`--profiles`: "auto" or ascending bucket edges like "16,64,256"."""
    if spec == "auto":
        return DEFAULT_EDGES
    try:
        edges = tuple(int(v) for v in spec.split(","))
    except ValueError:
        raise ConfigError(f"--profiles expects 'auto' or ascending class counts like 32,128, got {spec!r}") from None
    if not edges or min(edges) < 1 or list(edges) != sorted(set(edges)):
        raise ConfigError(f"--profiles expects ascending positive class counts like 32,128, got {spec!r}")
    return edges


def class_buckets(max_classes: int, edges: tuple[int, ...] = DEFAULT_EDGES, top_opt: int | None = None) -> Buckets:
    """Split 1..max_classes at `edges` (edges at or above the maximum are dropped)."""
    if max_classes < 1:
        raise ConfigError(f"--max-classes must be at least 1, got {max_classes}")
    uppers = [e for e in edges if e < max_classes] + [max_classes]
    ranges, lo = [], 1
    for hi in uppers:
        ranges.append((lo, hi))
        lo = hi + 1
    # the top bucket is tuned for the vocabulary when it falls there, else for the maximum
    top = top_opt if top_opt is not None and ranges[-1][0] <= top_opt <= max_classes else max_classes
    return Buckets(tuple(ranges), top)


@dataclass(frozen=True)
class ClassRange:
    """The largest class count the engines accept, the vocabulary size the top bucket is tuned for,
    and why (printed by sed-build)."""

    max_classes: int
    vocabulary: int | None
    reason: str


def default_max_classes(manifest: Manifest, vocab_sizes: tuple[int, ...] = (),
                        max_classes: int | None = None) -> ClassRange:
    """The class range to build for (see the module docstring for the rule)."""
    embedded = [int(v.get("classes", 0)) for v in manifest.vocabularies.values() if v.get("classes")]
    known = [*vocab_sizes, *embedded]
    largest = max(known) if known else None
    if max_classes is not None:
        return ClassRange(max_classes, largest, "--max-classes")
    if vocab_sizes:
        return ClassRange(max(known), largest, "the largest vocabulary given with --vocab or embedded at export")
    if embedded:
        return ClassRange(max(embedded), largest, "the largest vocabulary embedded at export")
    return ClassRange(FALLBACK_MAX_CLASSES, None, "no vocabulary known (give --vocab or --max-classes)")


def stage_plan(spec: StageSpec, buckets: Buckets) -> list[dict[str, list[list[int]]]]:
    """The profiles of one stage: [{input name: [min shape, opt shape, max shape]}]; [] if static."""
    axes = {a for t in spec.inputs for a in t.dynamic_axes.values()}
    if not axes:
        return []
    if axes == {"M", "L"}:
        sizes = [{"M": (1, TEXT_BATCH, TEXT_BATCH), "L": (1, TEXT_OPT_LENGTH, 77)}]
    else:
        keep = next((t for t in spec.inputs if t.name == "keep"), None)
        bucketed = keep.shape[0] if keep is not None else "T"  # decoders bucket the kept axis, the cost stage T
        gathered = (axes - {bucketed}).pop() if len(axes) > 1 else None
        max_classes = buckets.ranges[-1][1]
        sizes = []
        for i, (lo, hi) in enumerate(buckets.ranges):
            entry = {bucketed: (lo, buckets.opt(i), hi)}
            if gathered is not None:  # decoder1 gathers from the whole vocabulary, later ones from survivors
                entry[gathered] = (1, buckets.top_opt if gathered == "T" else buckets.opt(i), max_classes)
            sizes.append(entry)
    plan = []
    for entry in sizes:
        profile = {}
        for tensor in spec.inputs:
            if tensor.dynamic_axes:
                profile[tensor.name] = [
                    [entry[d][which] if isinstance(d, str) else d for d in tensor.shape] for which in range(3)
                ]
        plan.append(profile)
    return plan


def artifacts_plan(manifest: Manifest, max_classes: int | None = None, edges: tuple[int, ...] = DEFAULT_EDGES,
                   vocab_sizes: tuple[int, ...] = ()) -> dict[str, list[dict[str, list[list[int]]]]]:
    """The profile plan of every stage of an artifacts folder."""
    classes = default_max_classes(manifest, vocab_sizes, max_classes)
    buckets = class_buckets(classes.max_classes, edges, top_opt=classes.vocabulary)
    return {name: stage_plan(spec, buckets) for name, spec in manifest.stages.items()}
