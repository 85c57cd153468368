"""``register_interface``: offer an implementation of an interface on a server.

Usable as a call or a decorator, on anything that holds a :class:`~cara.rpc.connection.Services`
(``server.services``) or on a ``Services`` itself::

    register_interface(server, SimpleEcho, lambda text: text)

    @register_interface(server, SimpleEcho)
    def echo(text): return text

    @register_interface(server)          # the interface is inferred from the base class
    class Impl(BackAndForth): ...

A class is instantiated with no arguments. A function or lambda implements a one-method
interface; a dict maps method names to callables; any other object is used through its
attributes. Methods may be plain or ``async``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from cara.rpc.description import InterfaceInfo, describe
from cara.rpc.dispatch import Services

__all__ = ["is_interface", "register_interface"]

T = TypeVar("T")


def is_interface(obj: object) -> bool:
    """True when ``obj`` *is* an interface (a description or the interface class itself), not
    merely an implementation deriving from one."""
    if isinstance(obj, InterfaceInfo):
        return True
    return isinstance(obj, type) and (
        obj.__dict__.get("__cara_interface_info__") is not None
        or bool(obj.__dict__.get("_cara_generated_")))  # a runtime interface class


def _services(server: Any) -> Services:
    if isinstance(server, Services):
        return server
    services = getattr(server, "services", None)
    if not isinstance(services, Services):
        raise TypeError(f"{server!r} has no RPC services to register with")
    return services


def _register(services: Services, iface: Any, impl: Any) -> Any:
    obj = impl() if isinstance(impl, type) else impl
    info = describe(iface) if iface is not None else describe(impl)
    if info is None:
        raise TypeError(
            f"cannot infer the interface implemented by {impl!r}: pass it "
            "(register_interface(server, Iface, impl)) or subclass the interface")
    if callable(obj) and not isinstance(obj, Mapping) and describe(obj) is None \
            and not any(hasattr(obj, name) for name in info.by_name):
        if len(info.by_name) != 1:
            raise TypeError(
                f"a function can only implement a one-method interface; {info.name} has "
                f"{len(info.by_name)} methods ({', '.join(sorted(info.by_name))})")
    services.register(info, obj)
    return impl


@overload
def register_interface(server: Any, iface: Any = None, impl: None = None) -> Callable[[T], T]: ...
@overload
def register_interface(server: Any, iface: Any, impl: T) -> T: ...


def register_interface(server: Any, iface: Any = None, impl: Any = None) -> Any:
    """Register ``impl`` as the server's implementation of ``iface`` (see the module docstring).

    With no ``impl`` (and ``iface`` an interface or omitted) this returns a decorator. When
    ``iface`` is not an interface it is taken as the implementation, with the interface inferred.
    Returns what was registered, so a decorated class or function keeps its name."""
    services = _services(server)
    if iface is not None and impl is None and not is_interface(iface):
        return _register(services, None, iface)
    if impl is None:
        return lambda target: _register(services, iface, target)
    return _register(services, iface, impl)
