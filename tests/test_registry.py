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


def test_known_checks_a_config_field_and_keeps_the_spelling_given():
    from typing import Annotated

    from pydantic import AfterValidator, BaseModel, ValidationError

    reg: Registry = Registry("widget")
    reg.register("alpha", 1)

    class Config(BaseModel):
        widget: Annotated[str, AfterValidator(reg.known)] = "alpha"
        several: list[Annotated[str, AfterValidator(reg.known)]] = []

    assert Config(widget="ALPHA").widget == "ALPHA"  # registered under another spelling: kept as given
    for bad in ({"widget": "alpah"}, {"several": ["alpha", "gamma"]}):
        with pytest.raises((UnknownNameError, ValidationError), match=r"unknown widget '(alpah|gamma)'.*alpha"):
            Config(**bad)
