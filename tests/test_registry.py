import pytest

from cleanai.errors import UnknownNameError
from cleanai.registry import Registry


def test_register_as_decorator_and_create_with_kwargs():
    reg: Registry = Registry("widget")

    @reg.register("Big-Widget")
    def big(size: int = 1) -> int:
        return size * 10

    assert "big_widget" in reg and "BIG-WIDGET" in reg
    assert reg.create("big_widget", size=3) == 30
    assert reg.names() == ["big_widget"]


def test_unknown_name_lists_valid_names_and_suggests_close_match():
    reg: Registry = Registry("widget")
    reg.register("alpha", 1)
    reg.register("beta", 2)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'alpah'.*Did you mean 'alpha'.*alpha, beta"):
        reg.get("alpah")


def test_duplicate_registration_is_refused_unless_overridden():
    reg: Registry = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)
    reg.register("a", 3, override=True)
    assert reg.get("a") == 3
