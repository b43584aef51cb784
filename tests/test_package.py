"""The top-level package: a real package (not a namespace), a version, and a public surface that resolves."""

import importlib.util

import pytest

import cleanai


def test_cleanai_is_a_regular_package_with_a_version():
    spec = importlib.util.find_spec("cleanai")
    assert spec is not None and spec.origin is not None and spec.origin.endswith("__init__.py")
    assert cleanai.__version__ and cleanai.__version__[0].isdigit()


@pytest.mark.parametrize("name", [n for n in cleanai.__all__ if n != "__version__"])
def test_every_public_name_resolves_to_its_subpackage_object(name):
    value = getattr(cleanai, name)
    module = importlib.import_module(cleanai._WHERE[name])
    assert value is getattr(module, name)


def test_unknown_attribute_raises_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="no_such_thing"):
        cleanai.no_such_thing  # noqa: B018
