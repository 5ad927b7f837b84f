"""The ONNX form of the class-attention plugin: one `linear_class_attention` node in domain `sed`.

Owns the node's contract (op_type, domain, attributes), its ONNX schema and the onnxscript
translation that the dynamo exporter uses for the custom op `sed_deploy::linear_class_attention`.
No graph surgery: the export writes the node directly.

    with plugin_node_export():
        torch.onnx.export(stage, args, dynamo=True, custom_translation_table=plugin_translation_table())

The node, for [S,H,T,d] float32 or float16 q, k, v and one output of the same shape and dtype:

    op_type          "linear_class_attention"  (= the TensorRT plugin name)
    domain           "sed"                     (TensorRT >= 10.10 finds the plugin namespace here)
    plugin_namespace "sed"                     (older parsers, 10.6+, read only this attribute)
    plugin_version   "1"
    eps              float, 1e-6               (the only plugin field; see `trt_plugin`)
    aot              int 0/1                   (TensorRT >= 10.9 parser: 1 = the compiled Triton kernel
                                                baked into the engine, 0 = the Python JIT impl)

TensorRT's ONNX parser hands a QDP plugin only the attributes named in its field list (here `eps`);
`plugin_namespace`, `plugin_version` and `aot` are read by the parser itself. The `sed` opset import
(version 1) is added to the model by the exporter. ONNX Runtime runs the node on the CPU through
`ort_plugin` (onnxruntime-extensions, float32).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sed_deploy.core.optional import require

PLUGIN_NAMESPACE = "sed"
PLUGIN_NAME = "linear_class_attention"
PLUGIN_VERSION = "1"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
DOMAIN = PLUGIN_NAMESPACE
DOMAIN_VERSION = 1
DEFAULT_EPS = 1e-6


def plugin_node_attributes(aot: bool = True) -> dict[str, Any]:
    """Attributes besides `eps` that every plugin node carries (see the module docstring)."""
    return {"plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": PLUGIN_VERSION, "aot": int(bool(aot))}


def register_onnx_schema() -> None:
    """Register the node's schema with onnx (once per process) so onnxscript can emit it and the
    onnx checker can type-check it."""
    onnx = require("onnx", "the class-attention plugin node")
    if onnx.defs.has(PLUGIN_NAME, DOMAIN):
        return
    schema = onnx.defs.OpSchema
    attr = onnx.defs.OpSchema.Attribute
    attr_type = onnx.defs.OpSchema.AttrType
    onnx.defs.register_schema(
        schema(
            PLUGIN_NAME,
            DOMAIN,
            DOMAIN_VERSION,
            doc="SED linear attention along the class axis, [S,H,T,d] q, k, v -> [S,H,T,d] (TensorRT plugin).",
            inputs=[schema.FormalParameter(name, "T") for name in ("q", "k", "v")],
            outputs=[schema.FormalParameter("out", "T")],
            type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "float32 or float16")],
            attributes=[
                attr("eps", onnx.helper.make_attribute("eps", DEFAULT_EPS), "added to the normaliser"),
                attr("plugin_namespace", attr_type.STRING, "TensorRT plugin namespace", required=False),
                attr("plugin_version", attr_type.STRING, "TensorRT plugin version", required=False),
                attr("aot", attr_type.INT, "1: TensorRT's ahead-of-time implementation", required=False),
            ],
        )
    )


def plugin_translation_table(aot: bool = True) -> dict[Any, Callable]:
    """The `custom_translation_table` for `torch.onnx.export(..., dynamo=True)` in plugin mode.

    Args:
        aot: written as the node's `aot` attribute; True asks TensorRT (>= 10.9) for the compiled
            kernel baked into the engine, which needs no torch or triton at run time.

    Returns:
        {torch.ops.sed_deploy.linear_class_attention.default: translation}.
    """
    torch = require("torch", "the class-attention plugin node")
    onnxscript = require("onnxscript", "the class-attention plugin node")
    importlib.import_module(".custom_op", __package__)  # registers torch.ops.sed_deploy.linear_class_attention
    register_onnx_schema()
    opset = onnxscript.values.Opset(domain=DOMAIN, version=DOMAIN_VERSION)
    node_attributes = plugin_node_attributes(aot)

    def linear_class_attention(q, k, v, eps: float = DEFAULT_EPS):
        return opset.linear_class_attention(q, k, v, eps=eps, **node_attributes)

    return {torch.ops.sed_deploy.linear_class_attention.default: linear_class_attention}
