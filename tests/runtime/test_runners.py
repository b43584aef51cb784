"""Runners: torch, ONNX Runtime and text runners agree, save what ships, count params and MACs correctly."""

from __future__ import annotations

import filecmp
import warnings

import onnx
import pytest
import torch
from torch import nn

from cleanai.errors import CleanAIError
from cleanai.export import ExportError
from cleanai.runtime import (
    CompileError,
    OrtRunner,
    Runner,
    TextClassifierRunner,
    TorchRunner,
    as_runner,
    count_macs,
)


def test_torch_and_ort_runners_give_the_same_logits(cnn, cnn_onnx, cnn_data):
    x = cnn_data.tensors[0]
    torch_logits = TorchRunner(cnn)(x)
    ort_logits = OrtRunner(cnn_onnx)(x)
    assert ort_logits.shape == (40, 4)
    assert torch.allclose(torch_logits, ort_logits, atol=1e-5)


def test_every_runner_satisfies_the_runner_protocol(cnn, cnn_onnx, tokenizer, tiny_bert):
    for runner in (TorchRunner(cnn), OrtRunner(cnn_onnx), TextClassifierRunner(tokenizer, TorchRunner(tiny_bert))):
        assert isinstance(runner, Runner)
    assert isinstance(as_runner(cnn), TorchRunner)
    with pytest.raises(CleanAIError, match=r"not a Runner \(missing \['name', 'backend'"):
        as_runner(object())
    with pytest.raises(CleanAIError, match=r"NoneType is not a Runner"):  # benchmark(None, ...) ends here: one line
        as_runner(None)


def test_torch_runner_puts_the_model_in_eval_mode_and_records_no_grad():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
    runner = TorchRunner(model)
    assert not model.training
    out = runner(torch.ones(8, 4))
    assert not out.requires_grad
    assert torch.equal(out, runner(torch.ones(8, 4)))  # dropout is off


def test_torch_runner_saves_safetensors_of_the_state_dict(cnn, tmp_path):
    from safetensors.torch import load_file

    path = TorchRunner(cnn, name="my cnn/v1").save(tmp_path)
    assert path == tmp_path / "my_cnn_v1.safetensors"
    loaded = load_file(path)
    assert loaded.keys() == cnn.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in cnn.state_dict().items())


def test_compiled_torch_runner_matches_eager_follows_threads_and_saves_the_same_weights(cnn, cnn_data, tmp_path):
    from safetensors.torch import load_file

    x = cnn_data.tensors[0]
    runner = TorchRunner(cnn, name="compiled", compile=True)
    assert runner.provider == "inductor" and TorchRunner(cnn).provider is None
    assert torch.allclose(runner(x), TorchRunner(cnn)(x), atol=1e-5)
    before = torch.get_num_threads()
    try:
        runner.set_threads(1)
        assert torch.allclose(runner(x[:7]), TorchRunner(cnn)(x[:7]), atol=1e-5)  # another batch size, one thread
    finally:
        torch.set_num_threads(before)
    assert load_file(runner.save(tmp_path)).keys() == cnn.state_dict().keys()  # the module's weights, no wrapper


def test_a_model_inductor_cannot_compile_is_named_with_what_to_do(cnn, cnn_data, without_a_cxx_compiler):
    runner = TorchRunner(cnn, name="compiled", compile=True)
    with pytest.raises(CompileError, match=r"runner 'compiled': torch.compile \(inductor\) failed: "
                                           r"InvalidCxxCompiler.*C\+\+ compiler.*eagerly"):
        runner(cnn_data.tensors[0])


def test_torch_runner_saves_a_dynamically_quantized_model_with_torch_save(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    fp32, int8 = TorchRunner(model, name="fp32"), TorchRunner(quantized, name="int8")
    fp32_path, int8_path = fp32.save(tmp_path), int8.save(tmp_path)
    assert int8_path.suffix == ".pt"
    # int8 weights: about a quarter of the float32 bytes, plus pickle framing
    assert int8_path.stat().st_size < 0.4 * fp32_path.stat().st_size
    assert int8.num_params() == fp32.num_params() == 64 * 128 + 128 + 128 * 10 + 10
    assert int8.macs(torch.randn(1, 64)) == fp32.macs(torch.randn(1, 64)) == 64 * 128 + 128 * 10  # int8 Linear counted


def test_ort_runner_counts_the_same_params_as_torch(cnn, cnn_onnx):
    assert OrtRunner(cnn_onnx).num_params() == TorchRunner(cnn).num_params() == 8 * 3 * 9 + 8 + 128 * 4 + 4


def test_ort_runner_save_copies_the_file_or_writes_the_bytes(cnn_onnx, tmp_path):
    copied = OrtRunner(cnn_onnx, name="from-path").save(tmp_path)
    assert copied.name == "from-path.onnx" and filecmp.cmp(copied, cnn_onnx, shallow=False)
    from_bytes = OrtRunner(cnn_onnx.read_bytes(), name="from-bytes")
    assert from_bytes.save(tmp_path).read_bytes() == cnn_onnx.read_bytes()
    assert from_bytes.num_params() == OrtRunner(cnn_onnx).num_params()


def test_ort_runner_save_folds_external_weights_into_one_file(cnn_onnx, cnn_data, tmp_path):
    split = tmp_path / "split" / "model.onnx"
    split.parent.mkdir()
    onnx.save_model(onnx.load(str(cnn_onnx)), str(split), save_as_external_data=True,
                    location="model.onnx.data", size_threshold=0)
    assert split.stat().st_size < 1000 < (split.parent / "model.onnx.data").stat().st_size
    runner = OrtRunner(split, name="folded")
    saved = runner.save(tmp_path / "out")
    assert [p.name for p in saved.parent.iterdir()] == ["folded.onnx"]
    assert saved.stat().st_size > (split.parent / "model.onnx.data").stat().st_size
    x = cnn_data.tensors[0][:5]
    assert torch.allclose(OrtRunner(saved)(x), runner(x))


def test_ort_runner_set_threads_rebuilds_the_session(cnn_onnx, cnn_data):
    runner = OrtRunner(cnn_onnx, threads=2)
    assert runner._session.get_session_options().intra_op_num_threads == 2
    before = runner(cnn_data.tensors[0][:3])
    runner.set_threads(1)
    assert runner.threads == 1
    assert runner._session.get_session_options().intra_op_num_threads == 1
    assert torch.allclose(runner(cnn_data.tensors[0][:3]), before)
    session = runner._session
    runner.set_threads(1)
    assert runner._session is session  # the same thread count: nothing to rebuild


def test_ort_runner_maps_dict_inputs_and_names_what_is_missing(tiny_bert_onnx):
    runner = OrtRunner(tiny_bert_onnx)
    assert runner.input_names == ("input_ids", "attention_mask")
    ids = torch.randint(1000, 2000, (3, 5))
    assert runner({"input_ids": ids, "attention_mask": torch.ones_like(ids), "extra": ids}).shape == (3, 3)
    with pytest.raises(ValueError, match=r"inputs lack \['attention_mask'\]"):
        runner({"input_ids": ids})
    with pytest.raises(ValueError, match="pass a dict with those names"):
        runner(ids)


def test_ort_runner_rejects_bad_options_with_the_allowed_values(cnn_onnx, tmp_path):
    with pytest.raises(ValueError, match="graph_optimization='fast'.*allowed: disable, basic, extended, layout, all"):
        OrtRunner(cnn_onnx, graph_optimization="fast")
    with pytest.raises(ValueError, match="'CUDAExecutionProvider'.*available: .*CPUExecutionProvider"):
        OrtRunner(cnn_onnx, providers=["CUDAExecutionProvider"])
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OrtRunner(tmp_path / "missing.onnx")


def test_macs_equal_the_hand_count_for_linear_and_conv():
    assert count_macs(nn.Linear(10, 5), torch.randn(1, 10)) == 10 * 5
    assert count_macs(nn.Linear(10, 5), torch.randn(3, 10)) == 3 * 10 * 5
    # every one of the 8x8x8 outputs sums 3 channels x 3x3 taps
    assert count_macs(nn.Conv2d(3, 8, 3, padding=1), torch.randn(1, 3, 8, 8)) == 8 * 8 * 8 * 3 * 3 * 3


def test_counting_macs_leaves_the_model_untouched():
    model = nn.Sequential(nn.Linear(10, 5), nn.Dropout()).train()
    keys = set(model.state_dict())
    TorchRunner(model).macs(torch.randn(1, 10))  # TorchRunner sets eval mode itself ...
    model.train()
    count_macs(model, torch.randn(1, 10))  # ... but counting must not change the flag
    assert model.training and set(model.state_dict()) == keys
    assert not any(m._forward_hooks or m._forward_pre_hooks or hasattr(m, "total_ops") for m in model.modules())


def test_ort_runner_counts_the_macs_of_its_own_graph(cnn, cnn_onnx):
    x = torch.randn(1, 3, 8, 8)
    assert OrtRunner(cnn_onnx).macs(x) == TorchRunner(cnn).macs(x) > 0


def test_text_runner_tokenises_and_passes_only_accepted_inputs(tokenizer, tiny_bert, texts):
    runner = TextClassifierRunner(tokenizer, TorchRunner(tiny_bert, name="bert"), max_length=16)
    encoded = runner.encode(texts)
    assert set(encoded) == {"input_ids", "attention_mask"}  # token_type_ids dropped: forward does not take it
    assert encoded["input_ids"].shape[1] <= 16
    expected = tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.inference_mode():
        want = tiny_bert(expected["input_ids"], expected["attention_mask"])
    assert torch.allclose(runner(texts), want)
    assert runner.name == "bert" and runner.backend == "torch"
    assert runner.num_params() == sum(p.numel() for p in tiny_bert.parameters())


def test_text_runner_on_onnx_runtime_matches_torch(tokenizer, tiny_bert, tiny_bert_onnx, texts, tmp_path):
    torch_runner = TextClassifierRunner(tokenizer, TorchRunner(tiny_bert))
    ort_runner = TextClassifierRunner(tokenizer, OrtRunner(tiny_bert_onnx, name="bert-ort"))
    assert torch.allclose(torch_runner(texts), ort_runner(texts), atol=1e-5)
    assert ort_runner.backend == "onnxruntime" and ort_runner.provider == "CPUExecutionProvider"
    assert ort_runner.save(tmp_path).name == "bert-ort.onnx"


def test_text_runner_rejects_a_bare_string(tokenizer, tiny_bert):
    runner = TextClassifierRunner(tokenizer, TorchRunner(tiny_bert))
    with pytest.raises(TypeError, match="list of strings.*wrap a single text in a list"):
        runner("hello")


def _bert_hand_macs(model, seq: int, labels: int = 3) -> int:
    """Projections (Q, K, V, output), feed-forward, attention (Q·K^T and A·V) per layer, then pooler and classifier.

    LayerNorms, softmax and embedding lookups are not multiply-accumulates: they count zero.
    """
    h, i, n = model.hidden, model.intermediate, model.layers
    per_layer = 4 * seq * h * h + 2 * seq * h * i + 2 * seq * seq * h
    return n * per_layer + h * h + h * labels


@pytest.mark.parametrize("seq", [8, 16, 33])
def test_bert_macs_match_the_hand_count_including_attention(tiny_bert, seq):
    ids = torch.randint(1000, 2000, (1, seq))
    assert TorchRunner(tiny_bert).macs({"input_ids": ids, "attention_mask": torch.ones_like(ids)}) == (
        _bert_hand_macs(tiny_bert, seq)
    )


def test_bert_macs_grow_quadratically_with_sequence_length(tokenizer, tiny_bert):
    runner = TextClassifierRunner(tokenizer, TorchRunner(tiny_bert), max_length=128)
    short, long = "word " * 10, "word " * 22  # 12 and 24 tokens with [CLS] and [SEP]
    assert runner.encode([short])["input_ids"].shape[1] * 2 == runner.encode([long])["input_ids"].shape[1] == 24
    m12, m24 = runner.macs([short]), runner.macs([long])
    # doubling the length doubles the linear terms; the excess is attention's L^2 term (minus the fixed head)
    h, n = tiny_bert.hidden, tiny_bert.layers
    assert m24 - 2 * m12 == n * 2 * h * (24**2 - 2 * 12**2) - (h * h + h * 3)
    assert m24 > 2 * m12


def test_ort_runner_from_model_exports_checks_parity_and_runs_the_graph(cnn, cnn_data, tmp_path):
    x = cnn_data.tensors[0]
    runner = OrtRunner.from_model(cnn, x[:2], name="cnn ort", threads=1)
    assert runner.name == "cnn ort" and runner.backend == "onnxruntime"
    assert torch.allclose(runner(x), TorchRunner(cnn)(x), atol=1e-5)  # the dynamic batch axis works too
    assert runner.macs(x[:1]) == count_macs(cnn, x[:1])
    assert list(tmp_path.iterdir()) == [] and runner.save(tmp_path).suffix == ".onnx"  # nothing left but what is saved


def test_ort_runner_from_model_refuses_a_graph_that_disagrees_with_torch():
    class Baked(nn.Module):
        def forward(self, x):
            return torch.ones(len(x), 1) * x.sum(1, keepdim=True)  # the tracer bakes len(x) in as a constant

    with pytest.raises(ExportError, match="fails in ONNX Runtime on inputs grown along the dynamic axes"):
        OrtRunner.from_model(Baked(), torch.randn(2, 3), exporter="torchscript", fallback=False)


def test_text_runner_answers_empty_queries_out_of_scope_or_refuses_them(tokenizer, tiny_bert, texts):
    plain = TextClassifierRunner(tokenizer, TorchRunner(tiny_bert))
    with pytest.raises(ValueError, match="query 1 is empty or whitespace.*oos_index"):
        plain([texts[0], "  \t "])
    runner = TextClassifierRunner(tokenizer, TorchRunner(tiny_bert), oos_index=2)
    batch = [texts[0], "", "   ", texts[1]]
    logits = runner(batch)
    assert logits[1].argmax() == 2 and logits[2].argmax() == 2
    assert torch.allclose(logits[[0, 3]], plain([texts[0], texts[1]]), atol=1e-6)  # other rows: the model's own


def test_text_runner_truncates_over_long_queries_at_the_model_limit():
    from cleanai.models import create_model

    model = create_model("tiny_bert_classifier", num_labels=3, max_position_embeddings=40).eval()
    runner = TextClassifierRunner(model.tokenizer, TorchRunner(model), max_length=None)
    long_query = "what is the pin number for my account " * 200
    assert runner.encode([long_query])["input_ids"].shape == (1, 40)
    assert runner([long_query]).shape == (1, 3)
    assert TextClassifierRunner(model.tokenizer, TorchRunner(model), max_length=1000).max_length == 40
    assert TextClassifierRunner(model.tokenizer, TorchRunner(model), max_length=16).encode([long_query])[
        "input_ids"].shape == (1, 16)


def test_text_runner_tunes_an_oos_threshold_that_beats_none_on_its_data(tokenizer, tiny_bert, texts):
    logits = TextClassifierRunner(tokenizer, TorchRunner(tiny_bert))(texts)
    predicted, confidence = logits.argmax(-1), logits.softmax(-1).amax(-1)
    oos = int(torch.bincount(predicted, minlength=3).argmin())  # a class the model (almost) never predicts
    runner = TextClassifierRunner(tokenizer, TorchRunner(tiny_bert), oos_index=oos)
    # Labels: the model's own answer on its most confident half, out-of-scope on the rest.
    labels = torch.where(confidence >= confidence.median(), predicted, torch.tensor(oos))
    data = [(texts, labels)]
    untuned = (predicted == labels).float().mean()
    threshold = runner.tune_oos_threshold(data)
    assert runner.oos_threshold == threshold and 0 < threshold < 1
    tuned = (runner(texts).argmax(-1) == labels).float().mean()
    assert tuned > untuned and tuned == 1.0
    low = confidence < threshold
    assert torch.equal(runner(texts).argmax(-1)[low], torch.full((int(low.sum()),), oos))
