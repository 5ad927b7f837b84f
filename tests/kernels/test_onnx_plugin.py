"""The plugin-node export of class attention: graph structure on the CPU, and ONNX Runtime running the
node (onnxruntime-extensions) against the reference graph and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sed_deploy.kernels import plugin_node_export
from sed_deploy.kernels.onnx_plugin import DOMAIN, PLUGIN_NAME, plugin_translation_table
from sed_deploy.model.decoder import LinearAttentionLayer

onnx = pytest.importorskip("onnx", reason="needs onnx (the export extra)")
pytest.importorskip("onnxscript", reason="needs onnxscript (the export extra)")

SEQS, DIM, HEADS = 6, 32, 4  # head dim 8, as in decoder3
INPUT, OUTPUT = "tokens", "attended"


def export(layer: torch.nn.Module, plugin: bool, aot: bool = True) -> onnx.ModelProto:
    """Export [S,T,C] -> [S,T,C] with T dynamic, as the project's exporter does (dynamo, opset 17)."""
    example = (torch.randn(SEQS, 5, DIM),)
    kwargs = dict(
        dynamo=True,
        opset_version=17,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes=({1: torch.export.Dim("T", min=1, max=1024)},),
        optimize=True,
        verbose=False,
    )
    with torch.no_grad():
        if plugin:
            with plugin_node_export():
                program = torch.onnx.export(
                    layer, example, custom_translation_table=plugin_translation_table(aot), **kwargs
                )
        else:
            program = torch.onnx.export(layer, example, **kwargs)
    return program.model_proto


@pytest.fixture(scope="module")
def layer() -> torch.nn.Module:
    torch.manual_seed(0)
    return LinearAttentionLayer(DIM, HEADS).eval()


@pytest.fixture(scope="module")
def reference_graph(layer) -> onnx.ModelProto:
    return export(layer, plugin=False)


@pytest.fixture(scope="module")
def plugin_graph(layer) -> onnx.ModelProto:
    return export(layer, plugin=True)


def io_signature(model: onnx.ModelProto) -> list[tuple[str, int, list]]:
    """(name, element type, dims) of every graph input and output; symbolic dims as 'sym'."""
    rows = []
    for info in (*model.graph.input, *model.graph.output):
        tensor = info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else "sym" for d in tensor.shape.dim]
        rows.append((info.name, tensor.elem_type, dims))
    return rows


class TestPluginGraph:
    def test_has_one_plugin_node_and_no_reference_ops(self, plugin_graph):
        ops = [node.op_type for node in plugin_graph.graph.node]

        assert ops.count(PLUGIN_NAME) == 1
        assert not {"Elu", "ReduceSum", "Div"} & set(ops)  # phi, the key sum, the normalisation
        # the q, k, v projections only, each one Gemm with its bias (`model.decoder.linear_2d`)
        assert ops.count("Gemm") == 3 and "MatMul" not in ops

    def test_node_carries_what_tensorrt_reads(self, plugin_graph):
        node = next(n for n in plugin_graph.graph.node if n.op_type == PLUGIN_NAME)
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

        assert node.domain == DOMAIN == "sed"
        assert len(node.input) == 3 and len(node.output) == 1
        assert attributes["plugin_namespace"] == b"sed"
        assert attributes["plugin_version"] == b"1"
        assert attributes["aot"] == 1
        assert attributes["eps"] == pytest.approx(1e-6)
        assert ("sed", 1) in {(o.domain, o.version) for o in plugin_graph.opset_import}

    def test_names_and_shapes_match_the_reference_graph(self, plugin_graph, reference_graph):
        signature = io_signature(plugin_graph)

        assert signature == io_signature(reference_graph)
        assert signature == [(INPUT, 1, [SEQS, "sym", DIM]), (OUTPUT, 1, [SEQS, "sym", DIM])]

    def test_passes_the_checker_with_shapes(self, plugin_graph):
        onnx.checker.check_model(plugin_graph, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(plugin_graph)
        node = next(n for n in inferred.graph.node if n.op_type == PLUGIN_NAME)
        info = next(v for v in inferred.graph.value_info if v.name == node.output[0])
        assert len(info.type.tensor_type.shape.dim) == 4

    def test_reference_graph_keeps_standard_ops(self, reference_graph):
        ops = [node.op_type for node in reference_graph.graph.node]

        assert PLUGIN_NAME not in ops
        assert ops.count("Elu") == 2  # phi of q and of k
        assert {o.domain for o in reference_graph.opset_import} <= {"", "ai.onnx"}

    def test_aot_attribute_follows_the_option(self, layer):
        model = export(layer, plugin=True, aot=False)
        node = next(n for n in model.graph.node if n.op_type == PLUGIN_NAME)

        assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}["aot"] == 0


@pytest.fixture(scope="module")
def sessions(plugin_graph, reference_graph):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxruntime_extensions", reason="needs onnxruntime-extensions (the kernels extra)")
    from sed_deploy.kernels.ort_plugin import ort_session_options

    cpu = ["CPUExecutionProvider"]
    plugin = ort.InferenceSession(plugin_graph.SerializeToString(), ort_session_options(), providers=cpu)
    reference = ort.InferenceSession(reference_graph.SerializeToString(), providers=cpu)
    return plugin, reference


@pytest.mark.parametrize("classes", (1, 17, 150))
def test_plugin_graph_in_onnxruntime_equals_reference_graph(sessions, layer, generator, seed, classes):
    plugin, reference = sessions
    tokens = torch.randn(SEQS, classes, DIM, generator=generator)

    (plugin_out,) = plugin.run(None, {INPUT: tokens.numpy()})
    (reference_out,) = reference.run(None, {INPUT: tokens.numpy()})
    with torch.no_grad():
        torch_out = layer(tokens).numpy()

    assert plugin_out.shape == (SEQS, classes, DIM)
    np.testing.assert_allclose(plugin_out, reference_out, rtol=1e-5, atol=1e-6, err_msg=f"seed={seed}")
    np.testing.assert_allclose(plugin_out, torch_out, rtol=1e-5, atol=1e-6, err_msg=f"seed={seed}")


def test_custom_op_equals_reference_outside_export(generator):
    from sed_deploy.kernels.custom_op import linear_class_attention_op
    from sed_deploy.kernels.reference import linear_class_attention_reference

    q, k, v = (torch.randn(2, 3, 11, 8, generator=generator) for _ in range(3))

    assert torch.equal(linear_class_attention_op(q, k, v, 1e-6), linear_class_attention_reference(q, k, v))


def test_numpy_reference_equals_torch_reference(generator, seed):
    from sed_deploy.kernels.ort_plugin import linear_class_attention_numpy
    from sed_deploy.kernels.reference import linear_class_attention_reference

    q, k, v = (torch.randn(2, 3, 40, 16, generator=generator) * 3 for _ in range(3))

    expected = linear_class_attention_reference(q, k, v).numpy()
    np.testing.assert_allclose(
        linear_class_attention_numpy(q.numpy(), k.numpy(), v.numpy()),
        expected,
        rtol=1e-5,
        atol=1e-6,
        err_msg=f"seed={seed}",
    )


def test_ort_glue_names_the_extra_when_extensions_are_missing(monkeypatch):
    from sed_deploy.core.errors import MissingDependencyError
    from sed_deploy.kernels import ort_plugin

    monkeypatch.setattr(ort_plugin, "available", lambda name: False)
    with pytest.raises(
        MissingDependencyError, match=r"onnxruntime-extensions is not installed .*'sed-deploy\[kernels\]'"
    ):
        ort_plugin.register_ort_custom_op()
