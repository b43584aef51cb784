"""Student builders on tiny random BERT and DistilBERT classifiers: layers, width, config, vocabulary."""

from __future__ import annotations

import onnx
import pytest
import torch

from cleanai.distillation import (
    DistillationError, keep_layers, prune_vocabulary, shrink_width, student_from_config,
)
from cleanai.errors import ConfigError
from cleanai.export import create_session, export_onnx
from cleanai.models import TextClassifier, VocabularyEmbedding, tiny_bert_classifier

from .conftest import LABELS, TEXTS


@pytest.fixture()
def distilbert(teacher) -> TextClassifier:
    from transformers import AutoModelForSequenceClassification, DistilBertConfig

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=teacher.config.vocab_size, dim=32, n_layers=3, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64, dropout=0.0, attention_dropout=0.0,
                              id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    return TextClassifier(AutoModelForSequenceClassification.from_config(config), teacher.tokenizer).eval()


def other_encoder_model(kind: str, teacher: TextClassifier) -> TextClassifier:
    """A tiny random RoBERTa or MPNet classifier (reusing the BERT test tokenizer: the builders need its ids only)."""
    from transformers import AutoModelForSequenceClassification, MPNetConfig, RobertaConfig

    torch.manual_seed(0)
    config = {"roberta": RobertaConfig, "mpnet": MPNetConfig}[kind](
        vocab_size=teacher.config.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=130, pad_token_id=0, hidden_dropout_prob=0.0,
        id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    return TextClassifier(AutoModelForSequenceClassification.from_config(config), teacher.tokenizer).eval()


@pytest.fixture()
def roberta_bpe() -> TextClassifier:
    """A tiny random RoBERTa with its own byte-level BPE tokenizer, trained here on the test texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoModelForSequenceClassification, RobertaConfig, RobertaTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(TEXTS + ["the quick brown fox jumps over the lazy dog"], trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = RobertaTokenizerFast(tokenizer_object=bpe, **dict(zip(
        ["bos_token", "pad_token", "eos_token", "unk_token", "mask_token"], specials)))
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=130, pad_token_id=1, hidden_dropout_prob=0.0,
                           id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    return TextClassifier(AutoModelForSequenceClassification.from_config(config), tokenizer).eval()


@pytest.fixture(params=["roberta", "mpnet"])
def other_encoder(request, teacher) -> TextClassifier:
    return other_encoder_model(request.param, teacher)


def encoded(model: TextClassifier) -> dict[str, torch.Tensor]:
    return model.encode(TEXTS)


@pytest.mark.parametrize("which", ["teacher", "distilbert", "roberta", "mpnet"])
def test_keep_layers_copies_the_chosen_layers_and_reproduces_them(which: str, request) -> None:
    model = (request.getfixturevalue(which) if which in ("teacher", "distilbert")
             else other_encoder_model(which, request.getfixturevalue("teacher")))
    student = keep_layers(model, [0, 2])
    assert student.config.num_hidden_layers == 2 and model.config.num_hidden_layers in (3, 4)
    assert len(student.hf_model.base_model.encoder.layer if hasattr(student.hf_model.base_model, "encoder")
               else student.hf_model.base_model.transformer.layer) == 2
    with torch.no_grad():
        s_out = student.hf_model(**encoded(model), output_hidden_states=True)
        t_out = model.hf_model(**encoded(model), output_hidden_states=True)
    # The student's first layer is the teacher's first: same embedding and first-layer output.
    assert torch.allclose(s_out.hidden_states[1], t_out.hidden_states[1], atol=1e-5)
    assert s_out.logits.shape == t_out.logits.shape
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in model.parameters())


def test_keep_layers_refuses_indices_out_of_range_or_unordered(teacher) -> None:
    for bad in ([], [4], [2, 1], [0, 0]):
        with pytest.raises(ConfigError, match="increasing indices in \\[0, 4\\)"):
            keep_layers(teacher, bad)


def test_shrink_width_of_roberta_and_mpnet_makes_a_smaller_model_that_runs(other_encoder) -> None:
    student = shrink_width(other_encoder, encoded(other_encoder), head_ratio=0.5, ffn_ratio=0.5)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in other_encoder.parameters())
    assert student(**encoded(other_encoder)).shape == (len(TEXTS), 3)


def test_shrink_width_removes_heads_and_ffn_neurons_and_still_runs(teacher) -> None:
    student = shrink_width(teacher, encoded(teacher), head_ratio=0.5, ffn_ratio=0.5)
    layer = student.hf_model.bert.encoder.layer[0]
    assert layer.attention.self.num_attention_heads == 1 and layer.intermediate.dense.out_features == 32
    assert student(**encoded(teacher)).shape == (len(TEXTS), 3)
    assert teacher.hf_model.bert.encoder.layer[0].intermediate.dense.out_features == 64  # teacher untouched


@pytest.mark.parametrize("which, field", [("teacher", "num_hidden_layers"), ("distilbert", "n_layers")])
def test_student_from_config_keeps_tokenizer_and_labels(which: str, field: str, request) -> None:
    model = request.getfixturevalue(which)
    student = student_from_config(model, **{field: 1})
    assert student.config.num_hidden_layers == 1 and student.label_names == LABELS
    assert student.tokenizer is model.tokenizer
    with pytest.raises(DistillationError, match="no field"):
        student_from_config(model, num_wings=2)


@pytest.mark.parametrize("which", ["teacher", "distilbert", "roberta_bpe"])
def test_vocabulary_pruning_keeps_logits_on_in_vocabulary_text_and_shrinks(which: str, request, tmp_path) -> None:
    model = request.getfixturevalue(which)
    train = TEXTS[:6]
    small = prune_vocabulary(model, train)
    assert small.config.vocab_size < model.config.vocab_size
    assert small.hf_model.get_input_embeddings().num_embeddings == small.config.vocab_size
    # new texts made of the training texts' words, each where it stood there (BPE merges a word differently at
    # the start of a text, without its leading space)
    held_out = ["i forgot my money", "what is the money"]
    with torch.no_grad():
        assert torch.allclose(small(**small.encode(held_out)), model(**model.encode(held_out)), atol=1e-5)
    if which == "roberta_bpe":  # BPE: text not seen in training falls back to smaller kept pieces, down to bytes
        pieces = small.tokenizer.convert_ids_to_tokens(small.tokenizer("xyz quiz")["input_ids"])
        assert "".join(pieces[1:-1]) == "xyzĠquiz" and small.tokenizer.unk_token not in pieces
    else:  # WordPiece: pieces not kept map to [UNK]
        assert small.tokenizer.unk_token_id in small.tokenizer("xyz quiz")["input_ids"]
    small.save_pretrained(tmp_path / "small")
    model.save_pretrained(tmp_path / "full")
    size = lambda d: sum(p.stat().st_size for p in d.iterdir())  # noqa: E731
    assert size(tmp_path / "small") < size(tmp_path / "full")
    reloaded = TextClassifier.from_pretrained(tmp_path / "small").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**reloaded.encode(held_out)), small(**small.encode(held_out)), atol=1e-6)


def test_vocabulary_pruning_keeps_the_first_ids_asked_for_and_refuses_a_negative_count(teacher) -> None:
    train = TEXTS[:6]
    plain = prune_vocabulary(teacher, train)
    wider = prune_vocabulary(teacher, train, keep_first=20)
    first = teacher.tokenizer.convert_ids_to_tokens(list(range(20)))
    assert set(first) <= set(wider.tokenizer.get_vocab()) and not set(first) <= set(plain.tokenizer.get_vocab())
    assert wider.config.vocab_size == len(set(plain.tokenizer.get_vocab()) | set(first))
    with torch.no_grad():  # a word made of the extra pieces is now split as the full vocabulary splits it
        assert torch.allclose(wider(**wider.encode(["jig"])), teacher(**teacher.encode(["jig"])), atol=1e-5)
    with pytest.raises(DistillationError, match="keep_first must be >= 0"):
        prune_vocabulary(teacher, train, keep_first=-1)


@pytest.mark.parametrize("which", ["teacher", "roberta_bpe"])
def test_vocabulary_pruning_inside_the_model_keeps_the_tokenizer_and_maps_dropped_tokens_to_unk(which: str,
                                                                                                request) -> None:
    model = request.getfixturevalue(which)
    small = prune_vocabulary(model, TEXTS[:6], remap="model", fallback="prefix")
    embedding = small.hf_model.get_input_embeddings()
    assert isinstance(embedding, VocabularyEmbedding) and small.tokenizer is not model.tokenizer
    assert embedding.num_embeddings < model.hf_model.get_input_embeddings().num_embeddings
    assert small.tokenizer.get_vocab() == model.tokenizer.get_vocab()  # the same ids go in
    inputs = model.encode(["i forgot my money", "what is the money", "xyz quiz"])
    with torch.no_grad():
        got, want = small(**inputs), model(**inputs)
    assert torch.allclose(got[:2], want[:2], atol=1e-5)  # made of kept tokens: the same logits
    ids = inputs["input_ids"][2]
    dropped = [i for i in ids.tolist() if embedding.id_map[i] == embedding.id_map[model.tokenizer.unk_token_id]]
    assert dropped and not torch.allclose(got[2], want[2], atol=1e-5)  # "xyz quiz": its pieces read [UNK]'s row
    with pytest.raises(DistillationError, match="remap must be 'tokenizer'"):
        prune_vocabulary(model, TEXTS[:6], remap="embedding")


def test_the_vocabulary_map_is_int16_in_the_model_and_in_its_onnx_file_and_an_int64_map_still_loads(teacher,
                                                                                                     tmp_path) -> None:
    small = prune_vocabulary(teacher, TEXTS[:6], remap="model")
    id_map = small.hf_model.get_input_embeddings().id_map
    assert id_map.dtype == torch.int16
    inputs = teacher.encode(["i forgot my money", "xyz quiz"])
    path = export_onnx(small, inputs, tmp_path / "small.onnx", dynamic_sequence=True).path
    maps = [t for t in onnx.load(path).graph.initializer if list(t.dims) == [id_map.numel()]]
    assert [t.data_type for t in maps] == [onnx.TensorProto.INT16]
    session = create_session(path)
    got = torch.from_numpy(session.run(None, {k: v.numpy() for k, v in inputs.items()})[0])
    with torch.no_grad():
        want = small(**inputs)
        assert torch.allclose(got, want, atol=1e-5)
        wide = {k: v.long() if k.endswith("id_map") else v for k, v in small.state_dict().items()}
        older = prune_vocabulary(teacher, TEXTS[:6], remap="model")  # as saved before: an int64 map
        older.load_state_dict(wide)
        assert older.hf_model.get_input_embeddings().id_map.dtype == torch.int64
        assert torch.equal(older(**inputs), want)


def test_a_dropped_token_inside_the_model_reads_the_row_of_its_longest_kept_prefix(teacher) -> None:
    from transformers import BertTokenizer

    vocab = dict(teacher.tokenizer.get_vocab())
    for word in ("pin", "pink", "pinks", "##ink"):  # whole words and a suffix beside the character pieces
        vocab[word] = len(vocab)
    torch.manual_seed(0)
    model = TextClassifier(tiny_bert_classifier(label_names=LABELS, vocab_size=len(vocab)).hf_model,
                           BertTokenizer(vocab=vocab)).eval()
    small = prune_vocabulary(model, ["i forgot my pin", "a mink", "call #1"], remap="model", fallback="prefix")
    id_map = small.hf_model.get_input_embeddings().id_map
    ids = model.tokenizer.convert_tokens_to_ids
    assert model.tokenizer.tokenize("pink pinks mink") == ["pink", "pinks", "m", "##ink"]
    assert id_map[ids("pinks")] == id_map[ids("pink")] == id_map[ids("pin")]  # pinks -> pink (dropped) -> pin
    assert id_map[ids("##x")] == id_map[ids("[UNK]")] != id_map[ids("#")]  # a prefix needs a letter or digit
    with torch.no_grad():  # "pink" is read as "pin"
        assert torch.allclose(small(**model.encode(["pink"])), small(**model.encode(["pin"])), atol=1e-6)


def test_a_dropped_token_inside_the_model_reads_the_kept_row_nearest_to_its_own_by_default(teacher) -> None:
    from transformers import BertTokenizer

    vocab = dict(teacher.tokenizer.get_vocab())
    for word in ("pin", "pink", "code", "password"):
        vocab[word] = len(vocab)
    torch.manual_seed(0)
    model = TextClassifier(tiny_bert_classifier(label_names=LABELS, vocab_size=len(vocab)).hf_model,
                           BertTokenizer(vocab=vocab)).eval()
    ids = model.tokenizer.convert_tokens_to_ids
    weight = model.hf_model.get_input_embeddings().weight
    with torch.no_grad():  # "password" points the way "code" does (twice as long): cosine picks it, not "pin"
        weight[ids("password")] = 2 * weight[ids("code")] + 0.01 * torch.randn(weight.shape[1])
    small = prune_vocabulary(model, ["i forgot my pin", "my code"], remap="model")
    embedding = small.hf_model.get_input_embeddings()
    id_map = embedding.id_map
    assert id_map[ids("password")] == id_map[ids("code")] and id_map[ids("pink")] != id_map[ids("pin")]
    rows = torch.nn.functional.normalize(embedding.weight.detach(), dim=1)  # every id reads the kept row of the
    assert torch.equal((rows @ torch.nn.functional.normalize(weight.detach(), dim=1).T).argmax(0),  # highest cosine
                       id_map.long())
    with torch.no_grad():  # "my password" is read as "my code"
        assert torch.allclose(small(**model.encode(["my password"])), small(**model.encode(["my code"])), atol=1e-6)
    with pytest.raises(DistillationError, match="fallback must be 'nearest'.*got 'unk'"):
        prune_vocabulary(model, ["my code"], remap="model", fallback="unk")
