"""The checks every entry point shares: a model that is not a module, an example it cannot take, the wrong modality."""

import pytest
import torch

from cleanai._validate import check_model_input
from cleanai.errors import CleanAIError, InputError
from cleanai.export import export_onnx
from cleanai.models import create_model
from cleanai.pruning import prune
from cleanai.quantization import QuantConfig, quantize

IMAGES = torch.zeros(2, 1, 8, 8)


@pytest.mark.parametrize("call", [
    lambda model, x, tmp: prune(model, x),
    lambda model, x, tmp: quantize(model, QuantConfig(mode="dynamic"), example_inputs=x, workdir=tmp),
    lambda model, x, tmp: export_onnx(model, x, tmp / "m.onnx"),
], ids=["prune", "quantize", "export_onnx"])
def test_entry_points_refuse_a_missing_model_or_an_example_it_cannot_take(call, tmp_path):
    with pytest.raises(InputError, match=r"needs a torch.nn.Module, got None"):
        call(None, IMAGES, tmp_path)
    with pytest.raises(InputError, match=r"the model \(CifarResNet\) takes 3-channel images \(input size \(3, 32, 32\)\) "
                                         r"but the example input has 1-channel images \(a tensor of shape \(2, 1, 8, 8\)\)"):
        call(create_model("resnet20"), IMAGES, tmp_path)
    with pytest.raises(InputError, match=r"takes token ids \(text\) but the example input holds images"):
        call(create_model("tiny_bert_classifier", num_labels=3), IMAGES, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_forward_pass_decides_what_fits_and_its_reason_is_kept():
    cnn = create_model("small_cnn").train()
    assert check_model_input(cnn, IMAGES, where="prune") is cnn and cnn.training  # mode restored
    with pytest.raises(InputError, match=r"takes a batch of images \(N, 1, 8, 8\) but the example input is a tensor "
                                         r"of shape \(1, 8, 8\); add the batch axis"):
        check_model_input(cnn, IMAGES[0], where="prune")
    linear = torch.nn.Linear(4, 2)
    with pytest.raises(InputError, match=r"prune: the model \(Linear\) does not run on the example input \(a tensor "
                                         r"of shape \(3, 5\)\): mat1 and mat2 shapes cannot be multiplied"):
        check_model_input(linear, torch.zeros(3, 5), where="prune")
    with pytest.raises(InputError, match="must be a Tensor, a tuple of Tensors or a dict of Tensors, got str"):
        check_model_input(linear, "an image", where="prune")
    assert issubclass(InputError, CleanAIError) and issubclass(InputError, TypeError)


def test_an_example_with_nan_is_refused_before_it_is_traced():
    x = IMAGES.clone()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match=r"export_onnx: the example input hold NaN or inf: batch 0 \(1 of 128 values "
                                         r"nan\); a tensor of shape \(2, 1, 8, 8\); give finite inputs"):
        check_model_input(create_model("small_cnn"), x, where="export_onnx")
