"""`cleanai distill` on real CLINC150 queries (small subsets) with a tiny random BERT teacher."""

import json

import pytest
import torch

from cleanai.cli import main
from cleanai.data import load_dataset
from cleanai.models import TextClassifier, tiny_bert_classifier


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, shared_data_dir):
    torch.manual_seed(0)
    labels = load_dataset("clinc150", config="plus").label_names
    teacher = tiny_bert_classifier(label_names=labels, num_hidden_layers=3)
    return teacher.save_pretrained(tmp_path_factory.mktemp("teacher") / "teacher")


def test_distill_writes_the_student_rows_and_prints_the_table(teacher_dir, tmp_path, capsys):
    out = tmp_path / "kd"
    assert main(["distill", "--teacher", str(teacher_dir), "--student", "layers:0,2", "--data", "clinc150",
                 "--alpha", "0.5", "--temperature", "2", "--epochs", "1", "--train-subset", "64",
                 "--test-subset", "32", "--runs", "5", "--cache-dir", str(tmp_path / "logits"), "--out", str(out),
                 "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".cleanai-run", "distill_config.json", "history.json",
                                                     "metrics.png", "results.csv", "results.json", "student"]
    student = TextClassifier.from_pretrained(out / "student")
    assert student.config.num_hidden_layers == 2 and student.num_labels == 151
    rows = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in rows] == ["teacher", "student"]
    assert all(r["eval_samples"] == 32 and "oos_recall" in r["metrics"] for r in rows)
    assert json.loads((out / "distill_config.json").read_text())["alpha"] == 0.5
    assert "student" in capsys.readouterr().out
    assert list((tmp_path / "logits").glob("teacher-*.safetensors"))


def test_distill_refuses_a_bad_temperature_with_its_name(teacher_dir, tmp_path, capsys):
    assert main(["distill", "--teacher", str(teacher_dir), "--temperature", "0", "--train-subset", "8",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "temperature must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
