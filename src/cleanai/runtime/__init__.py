"""Runtime: the deployable Runners (torch module, ONNX Runtime session, OpenVINO
compiled model, tokenizer + model) and how to evaluate them.

What compression returns, what the benchmark measures and what a user ships are the same objects:

    from cleanai.runtime import OrtRunner, evaluate
    runner = OrtRunner.from_model(model, example)          # export (parity-checked) + session in one call
    evaluate(runner, test_loader).metrics                  # {"accuracy": ...}
"""

from cleanai.runtime.evaluate import Evaluation, checked_logits, evaluate
from cleanai.runtime.flops import count_macs
from cleanai.runtime.openvino_runner import (
    OpenVinoError,
    OpenVinoRunner,
    OpenVinoUnavailableError,
    openvino_available,
)
from cleanai.runtime.runners import (
    BenchmarkError,
    CompileError,
    OrtRunner,
    Runner,
    TextClassifierRunner,
    TorchRunner,
    artifact_bytes,
    as_runner,
)

__all__ = [
    "BenchmarkError",
    "CompileError",
    "Evaluation",
    "OpenVinoError",
    "OpenVinoRunner",
    "OpenVinoUnavailableError",
    "OrtRunner",
    "Runner",
    "TextClassifierRunner",
    "TorchRunner",
    "artifact_bytes",
    "as_runner",
    "checked_logits",
    "count_macs",
    "evaluate",
    "openvino_available",
]
