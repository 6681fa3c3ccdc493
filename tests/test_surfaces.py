"""Each package's public surface: every name in its `__all__` resolves, and nothing else
is offered as public (`dir()` is the surface)."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ("data", "changegen", "model", "trainer", "inference", "evaluation")


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_resolves(name):
    package = importlib.import_module(f"metauas.{name}")
    assert package.__all__
    for public in package.__all__:
        value = getattr(package, public)
        assert value is not None and not isinstance(value, type(package)), f"metauas.{name}.{public}"


@pytest.mark.parametrize("name", ("model", "trainer", "inference", "evaluation"))
def test_a_lazy_face_refuses_other_names(name):
    package = importlib.import_module(f"metauas.{name}")
    assert dir(package) == package.__all__
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        getattr(package, "nothing_here")
