"""SmallCNN: shapes, argument checks, and that it really learns the 8x8 digits quickly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from cleanai.models import create_model


def test_shapes_and_custom_widths() -> None:
    model = create_model("small_cnn", in_channels=3, num_classes=4, channels=(8, 8), image_size=16).eval()
    assert model.input_size == (3, 16, 16)
    with torch.no_grad():
        assert model(torch.randn(5, 3, 16, 16)).shape == (5, 4)
    with pytest.raises(ValueError, match=r"channels\[1\] must be a positive integer, got 0"):
        create_model("small_cnn", channels=(8, 0))


def test_trains_above_95_percent_on_digits_in_a_few_epochs() -> None:
    torch.set_num_threads(1)  # tiny batches: thread sync costs more than it gains (15x slower on a busy machine)
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    to_images = lambda a: torch.tensor(a / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)  # noqa: E731
    x_train, x_test = to_images(x_train), to_images(x_test)
    y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
    model = create_model("small_cnn")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(5):
        model.train()
        for batch in torch.randperm(len(x_train)).split(32):
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.95, f"test accuracy {accuracy:.3f}"
