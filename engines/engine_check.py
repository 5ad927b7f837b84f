"""`sed-build --check`: every engine against ONNX Runtime on the same inputs, in every profile.

Float outputs are compared by relative error (max |engine - ort| / max |ort|) against a tolerance
per precision (fp32 engines are built without TF32); top-k index outputs by the agreement of the
classes they keep at the default k (the union over pixels, which is what the runtime uses).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sed_deploy.core.contract import TOPK_OUTPUTS
from sed_deploy.core.manifest import Manifest
from sed_deploy.runtime.backends.onnxruntime import OrtBackend
from sed_deploy.runtime.backends.options import BackendOptions
from sed_deploy.runtime.backends.tensorrt import CudaSession, TensorrtBackend
from sed_deploy.runtime.engine_cache import EngineRecord
from sed_deploy.runtime.pipeline import topk_union
from sed_deploy.runtime.stage_feeds import plan_sizes, random_feeds

TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}


def check_engine(manifest: Manifest, folder: Path, record: EngineRecord, seed: int = 0) -> list[dict]:
    """Compare one engine with ONNX Runtime at the smallest and largest shapes of every profile.

    Returns one result per size: errors per output and pass/fail.
    """
    spec = manifest.stages[record.stage]
    engine = TensorrtBackend(spec, folder, manifest, BackendOptions(), record, CudaSession())
    reference = OrtBackend(spec, folder, manifest, BackendOptions(precision=_graph_precision(spec, record)))
    tolerance = TOLERANCE[record.computes or record.precision]
    results = []
    try:
        engine.load()
        reference.load()
        for i, sizes in enumerate(plan_sizes(spec, record.plan)):
            feeds = random_feeds(spec, sizes, np.random.default_rng(seed + i))
            got = {k: engine.to_host(v) for k, v in engine.run(feeds).items()}
            want = reference.run(feeds)
            errors = {}
            for tensor in spec.outputs:
                a, b = want[tensor.name], got[tensor.name]
                if tensor.name in TOPK_OUTPUTS:
                    num = sizes[_class_axis(spec)]
                    kept_a = set(topk_union(a, manifest.default_topk, num).tolist())
                    kept_b = set(topk_union(b, manifest.default_topk, num).tolist())
                    errors[tensor.name] = 1.0 - len(kept_a & kept_b) / max(1, len(kept_a | kept_b))
                else:
                    scale = max(float(np.abs(a).max(initial=0.0)), 1e-12)
                    errors[tensor.name] = float(np.abs(a.astype(np.float64) - b).max(initial=0.0)) / scale
            passed = all(e <= (0.05 if n in TOPK_OUTPUTS else tolerance) for n, e in errors.items())
            results.append({"sizes": sizes, "errors": errors, "passed": passed, "tolerance": tolerance})
    finally:
        engine.close()
        reference.close()
    return results


def _graph_precision(spec, record: EngineRecord) -> str | None:
    """The graph the engine was built from, as an onnxruntime precision: the fp16 graph for a strongly
    typed fp16 engine (it computes what that graph computes), else the fp32 graph."""
    if record.graph_file and record.graph_file != spec.file:
        return next((p for p, v in spec.variants.items() if v.file == record.graph_file), None)
    return None


def _class_axis(spec) -> str:
    """The axis of the classes alive at this stage: the kept axis of a decoder, T for the cost stage."""
    keep = next((t for t in spec.inputs if t.name == "keep"), None)
    return keep.shape[0] if keep is not None else "T"
