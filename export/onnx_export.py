"""Export one stage wrapper to an ONNX graph: dynamo exporter, constant folding, checker.

The graph is traced at class counts that are neither 0 nor 1 and differ from every static size,
so no dynamic axis is specialised, with `torch.export.Dim`s shared by name across a stage's
inputs. Exporter chatter is captured and only shown if the export fails.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import onnx
import torch

from sed_deploy.core.contract import EOT_TOKEN, SOT_TOKEN, TOKENS, stage_io_shapes
from sed_deploy.core.optional import require

from .stages import Stage

# Trace-time sizes of the dynamic axes.
TRACE_SIZES = {"T": 7, "T1": 5, "T2": 3, "T3": 2, "M": 13, "L": 11}
AXIS_MAX = {"L": 77}
DEFAULT_AXIS_MAX = 65536
TWO_GB = 2 << 30


def sample_inputs(stage: Stage, sizes: Mapping[str, int], generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random inputs of a stage at the given dynamic sizes (valid tokens and keep indices)."""
    shapes = stage_io_shapes(stage.CONTRACT.name, stage.model.config, stage.k)
    inputs = []
    for name in stage.CONTRACT.inputs:
        dims = [sizes[d] if isinstance(d, str) else d for d in shapes[name]]
        if name == "keep":
            source = next(n for n in stage.CONTRACT.inputs[1:] if 0 in stage.CONTRACT.dynamic.get(n, {}))
            upper = sizes[stage.CONTRACT.dynamic[source][0]]
            inputs.append(torch.randint(0, upper, dims, generator=generator, dtype=torch.int32))
        elif name == TOKENS:
            inputs.append(random_tokens(dims[0], dims[1], generator))
        else:
            inputs.append(torch.randn(dims, generator=generator))
    return tuple(inputs)


def random_tokens(rows: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Token rows shaped like CLIP's: start token, words, end token (the row's largest id), zeros."""
    tokens = torch.zeros(rows, length, dtype=torch.int64)
    ends = torch.randint(1, length, (rows,), generator=generator)
    ends[0] = length - 1  # the longest prompt fills the row, as after truncation
    for row, end in enumerate(ends.tolist()):
        tokens[row, 0] = SOT_TOKEN
        tokens[row, 1:end] = torch.randint(1, 49000, (end - 1,), generator=generator)
        tokens[row, end] = EOT_TOKEN
    return tokens


def dynamic_shapes(stage: Stage) -> tuple[dict[int, object] | None, ...]:
    """`torch.export.Dim`s of every input, one Dim object per axis name."""
    dims: dict[str, object] = {}

    def dim(name: str):
        if name not in dims:
            dims[name] = torch.export.Dim(name, min=1, max=AXIS_MAX.get(name, DEFAULT_AXIS_MAX))
        return dims[name]

    dynamic = stage.CONTRACT.dynamic
    return tuple({axis: dim(n) for axis, n in dynamic.get(i, {}).items()} or None for i in stage.CONTRACT.inputs)


def export_stage_proto(stage: Stage, opset: int, plugin: bool = False) -> onnx.ModelProto:
    """Trace `stage` and return its ONNX graph (weights inside), constants folded, shapes inferred.

    With `plugin`, the class-attention core becomes one `sed::linear_class_attention` node (the
    TensorRT plugin of `sed_deploy.kernels`) instead of its standard-op subgraph.
    """
    generator = torch.Generator().manual_seed(0)
    args = sample_inputs(stage, TRACE_SIZES, generator)
    translation_table, mode = None, contextlib.nullcontext()
    if plugin:
        from sed_deploy.kernels.dispatch import plugin_node_export
        from sed_deploy.kernels.onnx_plugin import plugin_translation_table

        translation_table, mode = plugin_translation_table(aot=True), plugin_node_export()
    chatter = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            warnings.simplefilter("ignore")
            with torch.inference_mode(False), torch.no_grad(), mode:
                program = torch.onnx.export(
                    stage.eval(), args, None, dynamo=True, opset_version=opset,
                    input_names=list(stage.CONTRACT.inputs), output_names=list(stage.CONTRACT.outputs),
                    dynamic_shapes=dynamic_shapes(stage), custom_translation_table=translation_table,
                    optimize=True, verbose=False,
                )
            proto = program.model_proto
    except Exception as exc:
        raise RuntimeError(f"exporting stage {stage.name} failed; exporter output:\n{chatter.getvalue()}") from exc
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    return fold_and_infer(proto)


def fold_and_infer(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constant subgraphs (Polygraphy, with ONNX Runtime) and infer shapes."""
    polygraphy_onnx = require("polygraphy.backend.onnx", "constant folding")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        folded = polygraphy_onnx.fold_constants(
            proto, num_passes=2, error_ok=False, allow_onnxruntime_shape_inference=False
        )
    return onnx.shape_inference.infer_shapes(folded)


def save_graph(proto: onnx.ModelProto, path: Path, data_name: str) -> None:
    """Write a graph to `path` and run the ONNX checker on the file.

    One file, unless the graph reaches protobuf's 2 GB limit: then the weights go to `data_name`
    beside it.
    """
    large = proto.ByteSize() >= TWO_GB
    onnx.save_model(proto, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=data_name if large else None)
    onnx.checker.check_model(str(path), full_check=True)


def graph_io(proto: onnx.ModelProto) -> dict[str, tuple[str, tuple[int | str, ...]]]:
    """name -> (numpy dtype name, shape) of a graph's inputs and outputs."""
    out = {}
    for info in (*proto.graph.input, *proto.graph.output):
        t = info.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        out[info.name] = (dtype, tuple(d.dim_param or d.dim_value for d in t.shape.dim))
    return out

