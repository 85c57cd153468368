"""register_interface: call and decorator forms, inference, and its refusals."""

from __future__ import annotations

from typing import Any

import pytest

from cara.rpc import Services, register_interface
from tests.rpc.schemas import load, runtime_module


def test_forms_with_a_description() -> None:
    I = load()
    services = Services()

    def echo(text: str) -> str:
        return text

    assert register_interface(services, I["Echo"], echo) is echo
    assert register_interface(services, I["Echo"])(echo) is echo
    with pytest.raises(TypeError, match="one-method"):
        register_interface(services, I["Calc"], echo)
    with pytest.raises(TypeError, match="infer"):
        register_interface(services, object())
    with pytest.raises(TypeError, match="no RPC services"):
        register_interface(object(), I["Echo"], echo)


def test_inference_from_a_runtime_subclass() -> None:
    m = runtime_module()
    services = Services()

    @register_interface(services)
    class Impl(m.Calc):
        def add(self, a: int, b: int) -> int:
            return a + b

    assert isinstance(Impl, type)  # the class itself comes back
    impl = services.lookup(m.Calc.cara_schema.id)
    assert impl is not None and isinstance(impl.obj, Impl)  # instantiated with no arguments

    obj: Any = Impl()
    register_interface(services, impl=obj)
    assert services.lookup(m.Calc.cara_schema.id).obj is obj  # type: ignore[union-attr]
    # a plain function for a one-method runtime interface is wrapped by the runtime class
    register_interface(services, m.Echo, lambda text: text)
    wrapped = services.lookup(m.Echo.cara_schema.id)
    assert wrapped is not None and isinstance(wrapped.obj, m.Echo)
