"""create_session and optimize_onnx: options reach ONNX Runtime, saved optimised graphs run and agree with torch."""

from __future__ import annotations

import onnx
import pytest
import torch

from cleanai.export import create_session, optimize_onnx


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _logits(path, feed: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.from_numpy(create_session(path).run(None, {k: v.numpy() for k, v in feed.items()})[0])


def test_threads_level_and_providers_reach_the_session(cnn_onnx):
    session = create_session(cnn_onnx, threads=2, graph_optimization="basic")
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert str(options.graph_optimization_level) == "GraphOptimizationLevel.ORT_ENABLE_BASIC"
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert create_session(cnn_onnx).get_session_options().intra_op_num_threads == 0  # ONNX Runtime's default


def test_a_session_loads_from_bytes_and_gives_the_same_logits(cnn, cnn_onnx, images):
    from_bytes = create_session(cnn_onnx.read_bytes())
    out = torch.from_numpy(from_bytes.run(None, {"input": images.numpy()})[0])
    with torch.no_grad():
        assert torch.allclose(out, cnn(images), atol=1e-5)


def test_bad_session_options_name_the_allowed_values(cnn_onnx, tmp_path):
    with pytest.raises(ValueError, match="graph_optimization='max' .* allowed: disable, basic, extended, layout, all"):
        create_session(cnn_onnx, graph_optimization="max")
    with pytest.raises(ValueError, match=r"\['CUDAExecutionProvider'\] not available .* available: .*CPUExecutionProvider"):
        create_session(cnn_onnx, providers=["CUDAExecutionProvider"])
    with pytest.raises(ValueError, match="threads=0 must be a positive integer"):
        create_session(cnn_onnx, threads=0)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        create_session(tmp_path / "missing.onnx")


def test_the_session_saves_the_graph_it_optimised(cnn_onnx, tmp_path):
    create_session(cnn_onnx, graph_optimization="extended", optimized_model_path=tmp_path / "seen.onnx")
    assert "FusedConv" in _ops(tmp_path / "seen.onnx")


def test_optimize_onnx_fuses_conv_and_relu_and_the_result_agrees(cnn, cnn_onnx, images, tmp_path):
    plain = optimize_onnx(cnn_onnx, tmp_path / "plain.onnx", level="disable")
    fused = optimize_onnx(cnn_onnx, tmp_path / "fused.onnx", level="extended")
    assert _ops(plain) == _ops(cnn_onnx)
    assert "FusedConv" in _ops(fused) and "Relu" not in _ops(fused) and len(_ops(fused)) < len(_ops(cnn_onnx))
    with torch.no_grad():
        assert torch.allclose(_logits(fused, {"input": images}), cnn(images), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.onnx", "plain.onnx"]  # nothing half-written


def test_the_transformer_optimizer_fuses_attention_of_an_eager_bert(bert, bert_onnx, sentences, tmp_path):
    out = optimize_onnx(bert_onnx, tmp_path / "bert-opt.onnx",
                        transformer={"model_type": "bert", "num_heads": 2, "hidden_size": 32})
    ops = _ops(out)
    assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"} <= set(ops)
    assert len(ops) < len(_ops(bert_onnx)) / 3
    feed = bert.encode([*sentences, "transfer money to savings"])
    with torch.no_grad():
        assert torch.allclose(_logits(out, feed), bert(**feed), atol=1e-5)


def test_an_sdpa_bert_gets_no_fused_attention_and_a_warning_that_says_how_to_get_it(sdpa_bert, sentences, tmp_path):
    from cleanai.export import export_onnx

    source = export_onnx(sdpa_bert, sdpa_bert.encode(sentences), tmp_path / "sdpa.onnx", dynamic_sequence=True).path
    with pytest.warns(UserWarning, match="fused no attention .* attn_implementation='eager'"):
        out = optimize_onnx(source, tmp_path / "sdpa-opt.onnx", transformer={"model_type": "bert"})
    assert "Attention" not in _ops(out) and "SkipLayerNormalization" in _ops(out)


def test_bad_optimisation_requests_name_what_is_allowed(bert_onnx, tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['heads'\]; allowed keys: model_type, num_heads, hidden_size"):
        optimize_onnx(bert_onnx, tmp_path / "x.onnx", transformer={"model_type": "bert", "heads": 2})
    with pytest.raises(ValueError, match="'model_type' missing"):
        optimize_onnx(bert_onnx, tmp_path / "x.onnx", transformer={"num_heads": 2})
    with pytest.raises(ValueError, match="model_type='bertt' is not known .* allowed: .*bert"):
        optimize_onnx(bert_onnx, tmp_path / "x.onnx", transformer={"model_type": "bertt"})
    with pytest.raises(ValueError, match="num_heads=-2 must be a non-negative integer"):
        optimize_onnx(bert_onnx, tmp_path / "x.onnx", transformer={"model_type": "bert", "num_heads": -2})
    with pytest.raises(ValueError, match="level='layout' .* allowed: disable, basic, extended, all"):
        optimize_onnx(bert_onnx, tmp_path / "x.onnx", level="layout", transformer={"model_type": "bert"})
    with pytest.raises(ValueError, match="level='fast'"):
        optimize_onnx(bert_onnx, tmp_path / "x.onnx", level="fast")
    with pytest.raises(FileNotFoundError, match="nothing.onnx"):
        optimize_onnx(tmp_path / "nothing.onnx", tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []
