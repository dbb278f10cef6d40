"""The public API is typed: every function and layer method a user calls says what it takes
and returns (the package ships py.typed)."""

import inspect
import pathlib

import pytest

import cnnlab
import cnnlab.dask
import cnnlab.filters
import cnnlab.functional as F
import cnnlab.layers as L
import cnnlab.onnx


def public_functions():
    for module in (F, cnnlab.filters, cnnlab.dask, cnnlab.onnx):
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if inspect.isfunction(value):
                yield f"{module.__name__}.{name}", value
    for name in L.__all__:
        cls = getattr(L, name)
        if inspect.isclass(cls):
            for method in ("__init__", "forward", "backward", "output_shape"):
                yield f"cnnlab.layers.{name}.{method}", getattr(cls, method)


@pytest.mark.parametrize("name, function", list(public_functions()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_functions_have_type_hints(name, function):
    signature = inspect.signature(inspect.unwrap(function))
    missing = [p.name for p in signature.parameters.values()
               if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
    assert not missing, f"{name}: parameters without a type hint: {missing}"
    assert signature.return_annotation is not inspect.Signature.empty, f"{name} has no return type hint"


def test_the_package_says_it_is_typed():
    assert (pathlib.Path(cnnlab.__file__).parent / "py.typed").is_file()
