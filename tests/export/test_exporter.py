"""export_onnx: one checked file with named, dynamic inputs; failures name the operator and module; bad graphs are not kept."""

from __future__ import annotations

import onnx
import pytest
import torch
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
from torch import nn

from cleanai.export import ExportError, create_session, export_onnx
from cleanai.models import create_model


def _dims(path, name: str) -> list[str | int]:
    graph = onnx.load(str(path), load_external_data=False).graph
    tensor = next(i for i in [*graph.input, *graph.output] if i.name == name)
    return [d.dim_param or d.dim_value for d in tensor.type.tensor_type.shape.dim]


def _run(path, feed: dict[str, torch.Tensor]) -> torch.Tensor:
    session = create_session(path)
    return torch.from_numpy(session.run(None, {k: v.numpy() for k, v in feed.items()})[0])


def test_a_cnn_exports_to_one_checked_file_with_a_dynamic_batch(cnn, images, tmp_path):
    result = export_onnx(cnn, images, tmp_path / "cnn.onnx")
    assert result.path == tmp_path / "cnn.onnx" and result.data_path is None
    assert [p.name for p in tmp_path.iterdir()] == ["cnn.onnx"]  # no side file, no staging leftovers
    assert (result.input_names, result.output_names) == (["input"], ["logits"])
    assert result.exporter == "torchscript" and result.opset == 20 and result.seconds > 0
    assert 0 <= result.max_abs_diff < 1e-4
    assert _dims(result.path, "input") == ["batch", 1, 8, 8] and _dims(result.path, "logits") == ["batch", 3]
    batch = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(_run(result.path, {"input": batch}), cnn(batch), atol=1e-5)


def test_a_fixed_batch_graph_refuses_other_batch_sizes(cnn, images, tmp_path):
    result = export_onnx(cnn, images, tmp_path / "fixed.onnx", dynamic_batch=False, opset=17)
    assert _dims(result.path, "input") == [2, 1, 8, 8]
    assert result.opset == 17 and onnx.load(str(result.path)).opset_import[0].version == 17
    with pytest.raises(InvalidArgument, match="Got invalid dimensions"):
        _run(result.path, {"input": torch.randn(3, 1, 8, 8)})


def test_a_text_model_gets_named_inputs_with_dynamic_batch_and_sequence(bert, sentences, tmp_path):
    encoded = bert.encode(sentences)
    reordered = {k: encoded[k] for k in reversed(list(encoded))}  # keys are put in forward()'s order
    result = export_onnx(bert, reordered, tmp_path / "bert.onnx", dynamic_sequence=True)
    assert result.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(_dims(result.path, name) == ["batch", "sequence"] for name in result.input_names)
    longer = bert.encode(["a", "set an alarm for seven in the morning please", "tell me a joke"])
    assert longer["input_ids"].shape[1] != encoded["input_ids"].shape[1]
    with torch.no_grad():
        assert torch.allclose(_run(result.path, longer), bert(**longer), atol=1e-5)


def test_tuple_inputs_are_named_after_the_forward_parameters(tmp_path):
    class Pair(nn.Module):
        def forward(self, image: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            return image.flatten(1) * scale

    result = export_onnx(Pair(), (torch.randn(2, 3, 2), torch.randn(2, 1)), tmp_path / "pair.onnx")
    assert result.input_names == ["image", "scale"]


def test_external_data_goes_to_one_side_file_and_a_later_single_file_export_removes_it(bert, sentences, tmp_path):
    path = tmp_path / "bert.onnx"
    split = export_onnx(bert, bert.encode(sentences), path, external_data=True)
    assert split.data_path == tmp_path / "bert.onnx.data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert.onnx", "bert.onnx.data"]
    assert split.data_path.stat().st_size > path.stat().st_size  # the weights live in the side file
    single = export_onnx(bert, bert.encode(sentences), path)
    assert single.data_path is None and [p.name for p in tmp_path.iterdir()] == ["bert.onnx"]


class _CountsCalls(nn.Module):
    """Scales by how often it was called: the trace bakes in a Python value, so the graph is wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * self.calls


def test_a_graph_that_disagrees_with_torch_is_refused_and_not_written(tmp_path):
    with pytest.raises(ExportError, match=r"parity check failed: output 'logits' of the exported graph \(torchscript "
                                          r"exporter\) differs from torch by max abs diff .* > atol 0.0001 \+ rtol "
                                          r"1e-05 x max \|output\| .* on the example inputs"):
        export_onnx(_CountsCalls(), torch.ones(2, 3), tmp_path / "bad.onnx", fallback=False)
    assert list(tmp_path.iterdir()) == []
    unchecked = export_onnx(_CountsCalls(), torch.ones(2, 3), tmp_path / "bad.onnx", check_parity=False)
    assert unchecked.max_abs_diff is None and unchecked.path.is_file()


def test_parity_tolerance_grows_with_the_outputs_magnitude(tmp_path):
    """A deep random-init ResNet's logits reach ~1e4; float32 rounding then differs by ~1e-2, not a broken graph."""
    torch.manual_seed(0)
    model = create_model("resnet56").eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(images).abs().max() > 1000
    result = export_onnx(model, images, tmp_path / "r56.onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff > 1e-4  # the default atol alone would refuse it
    with pytest.raises(ExportError, match="rtol 0 x max"):
        export_onnx(model, images, tmp_path / "strict.onnx", atol=1e-9, rtol=0, fallback=False)


def test_a_trace_with_a_baked_in_batch_size_fails_the_grown_inputs_and_falls_back_to_dynamo(tmp_path):
    class BatchAsPythonInt(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(len(x), 1) * x.sum(1, keepdim=True)  # the tracer records len(x) as the constant 2

    with pytest.warns(UserWarning, match=r"\(torchscript exporter\) fails in ONNX Runtime on inputs grown along the "
                                         r"dynamic axes to \(3, 4\).*falling back to the dynamo exporter"):
        result = export_onnx(BatchAsPythonInt(), torch.randn(2, 4), tmp_path / "len.onnx")
    assert result.exporter == "dynamo"
    batch = torch.randn(6, 4)
    assert torch.allclose(_run(result.path, {"input": batch}), BatchAsPythonInt()(batch), atol=1e-5)
    assert len(onnx.load(str(result.path)).graph.value_info) == 0  # cleared, so onnxruntime.quantization works


class _Eigen(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvalsh(x @ x.T)


class _WithEigen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.spectrum = _Eigen()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectrum(self.proj(x))


def test_an_unsupported_operator_is_named_with_the_module_that_calls_it(tmp_path):
    with pytest.raises(ExportError, match=r"the torchscript exporter cannot export _WithEigen: operator "
                                          r"aten::linalg_eigvalsh, called in module 'spectrum' \(_Eigen\), has no "
                                          r"ONNX conversion at opset 20") as info:
        export_onnx(_WithEigen(), torch.randn(4, 4), tmp_path / "eig.onnx", fallback=False)
    assert (info.value.operator, info.value.module) == ("aten::linalg_eigvalsh", "'spectrum' (_Eigen)")
    assert list(tmp_path.iterdir()) == []


def test_an_rms_norm_model_falls_back_to_the_dynamo_exporter_and_says_why(tmp_path):
    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.RMSNorm(8)
            self.out = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.norm(x))

    model = Head().eval()
    with pytest.warns(UserWarning, match=r"operator aten::rms_norm, called in module 'norm' \(RMSNorm\).*falling back "
                                         r"to the dynamo exporter"):
        result = export_onnx(model, torch.randn(2, 8), tmp_path / "rms.onnx")
    assert result.exporter == "dynamo" and result.max_abs_diff < 1e-4
    batch = torch.randn(7, 8)
    with torch.no_grad():
        assert torch.allclose(_run(result.path, {"input": batch}), model(batch), atol=1e-5)


def test_when_both_exporters_fail_the_error_reports_both(tmp_path):
    with pytest.warns(UserWarning, match="falling back to the dynamo exporter"), \
            pytest.raises(ExportError, match=r"torchscript exporter .* aten::linalg_eigvalsh.*; and the dynamo exporter "
                                             r"cannot export _WithEigen: operator aten._linalg_eigh, called in module "
                                             r"'spectrum' \(_Eigen\)"):
        export_onnx(_WithEigen(), torch.randn(4, 4), tmp_path / "eig.onnx")


def test_export_leaves_the_training_flag_and_exports_the_eval_graph(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
    result = export_onnx(model, torch.randn(3, 4), tmp_path / "drop.onnx")
    assert model.training and result.max_abs_diff < 1e-5  # dropout was off while exporting and comparing


def test_bad_arguments_name_what_is_allowed(cnn, bert, images, tmp_path):
    with pytest.raises(ValueError, match="exporter='onnx' .* allowed: torchscript, dynamo"):
        export_onnx(cnn, images, tmp_path / "x.onnx", exporter="onnx")
    with pytest.raises(TypeError, match="must be a Tensor, a non-empty tuple of Tensors or a dict of Tensors, got str"):
        export_onnx(cnn, "an image", tmp_path / "x.onnx")
    with pytest.raises(ValueError, match=r"keys \['ids'\] are not parameters of TextClassifier.forward; it takes: "
                                         "input_ids, attention_mask, token_type_ids"):
        export_onnx(bert, {"ids": torch.ones(1, 3, dtype=torch.long)}, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="atol=-1"):
        export_onnx(cnn, images, tmp_path / "x.onnx", atol=-1)
    with pytest.raises(ValueError, match="rtol=-1"):
        export_onnx(cnn, images, tmp_path / "x.onnx", rtol=-1)

    class ReturnsDict(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": x}

    with pytest.raises(ExportError, match="ReturnsDict returns a dict; ONNX export needs a Tensor, a tuple of Tensors or an object with a .logits"):
        export_onnx(ReturnsDict(), images, tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


_KILLED_EXPORT = """
import os, sys, torch
from torch import nn
import cleanai.export.exporter as exporter
def killed(*args, **kwargs):
    os._exit(9)  # killed mid-export: no cleanup code runs
exporter._export_checked = killed
exporter.export_onnx(nn.Linear(3, 2), torch.randn(2, 3), sys.argv[1] + "/model.onnx")
"""


def test_what_a_killed_export_left_is_removed_by_the_next_export_to_the_same_path(tmp_path):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _KILLED_EXPORT, str(tmp_path)], env=os.environ, check=False)
    assert done.returncode == 9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".model.onnx.") and left[0].endswith(".tmp")
    export_onnx(nn.Linear(3, 2), torch.randn(2, 3), tmp_path / "model.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_dynamic_axes_come_from_the_example_a_batch_for_images_a_sequence_for_token_ids(tmp_path):
    class ImageAndTokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.embed = nn.Embedding(50, 4)

        def forward(self, image: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
            return self.conv(image).mean((2, 3)) + self.embed(input_ids).mean(1)

    model = ImageAndTokens().eval()
    example = {"image": torch.randn(2, 1, 16, 16), "input_ids": torch.randint(0, 50, (2, 7))}
    result = export_onnx(model, example, tmp_path / "mixed.onnx")
    assert _dims(result.path, "image") == ["batch", 1, 16, 16]  # an image has no sequence axis
    assert _dims(result.path, "input_ids") == ["batch", "sequence"]
    longer = {"image": torch.randn(3, 1, 16, 16), "input_ids": torch.randint(0, 50, (3, 11))}
    with torch.no_grad():
        assert torch.allclose(_run(result.path, longer), model(**longer), atol=1e-5)


def test_a_hugging_face_model_exports_its_logits(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    vit = ViTForImageClassification(ViTConfig(image_size=16, patch_size=8, num_channels=3, num_labels=3,
                                              hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                              intermediate_size=64)).eval()
    result = export_onnx(vit, torch.randn(2, 3, 16, 16), tmp_path / "vit.onnx")
    assert result.output_names == ["logits"] and _dims(result.path, "input") == ["batch", 3, 16, 16]
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(_run(result.path, {"input": x}), vit(x).logits, atol=1e-4)
