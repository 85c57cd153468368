"""How exceptions cross the wire: builtins by an allow-list, everything else as Failed."""

from __future__ import annotations

import builtins

import pytest

from cara.rpc import Disconnected, Failed, Overloaded, RemoteTraceback, Unimplemented
from cara.rpc.errors import (
    BUILTIN_EXCEPTIONS,
    KIND_DISCONNECTED,
    KIND_FAILED,
    KIND_OVERLOADED,
    KIND_UNIMPLEMENTED,
    exception_from_wire,
    exception_to_wire,
)


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize("cls", [ValueError, TypeError, KeyError, ZeroDivisionError,
                                 FileNotFoundError, TimeoutError, NotImplementedError])
def test_builtin_round_trip_keeps_type_and_message(cls: type[Exception]) -> None:
    wire = exception_to_wire(_raised(cls("the message")), with_traceback=True)
    back = exception_from_wire(*wire)
    assert isinstance(back, cls)
    assert back.args == ("the message",)
    assert isinstance(back.__cause__, RemoteTraceback)
    assert "the message" in str(back.__cause__) and "Traceback" in str(back.__cause__)


def test_traceback_can_be_withheld() -> None:
    wire = exception_to_wire(_raised(ValueError("x")), with_traceback=False)
    assert wire[3] is None
    assert exception_from_wire(*wire).__cause__ is None


@pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt", "os.system", "Exception",
                                  "BaseException", "GeneratorExit", "__import__", "eval", ""])
def test_names_outside_the_allow_list_are_never_looked_up(name: str) -> None:
    back = exception_from_wire(KIND_FAILED, name, "boom", None)
    assert type(back) is Failed
    assert back.remote_type == name
    assert "boom" in str(back)


def test_allow_list_holds_only_builtin_exceptions() -> None:
    for name, cls in BUILTIN_EXCEPTIONS.items():
        assert getattr(builtins, name) is cls and issubclass(cls, Exception)
    assert "SystemExit" not in BUILTIN_EXCEPTIONS


def test_kinds() -> None:
    assert exception_to_wire(Overloaded("busy"), with_traceback=False)[0] == KIND_OVERLOADED
    assert exception_to_wire(Unimplemented("no"), with_traceback=False)[0] == KIND_UNIMPLEMENTED
    assert exception_to_wire(NotImplementedError("no"), with_traceback=False)[0] == \
        KIND_UNIMPLEMENTED
    assert exception_to_wire(Disconnected("gone"), with_traceback=False)[0] == KIND_DISCONNECTED
    assert isinstance(exception_from_wire(KIND_OVERLOADED, "X", "m", None), Overloaded)
    un = exception_from_wire(KIND_UNIMPLEMENTED, "X", "m", None)
    assert isinstance(un, Unimplemented) and isinstance(un, NotImplementedError)
    dis = exception_from_wire(KIND_DISCONNECTED, "X", "m", None)
    assert isinstance(dis, ConnectionError)


@pytest.mark.parametrize("fields", [(None, None, None, None), (7, 5, b"x", 3),
                                    (KIND_FAILED, ["ValueError"], {"m": 1}, 2.5)])
def test_garbage_fields_still_give_an_exception(fields: tuple[object, ...]) -> None:
    assert isinstance(exception_from_wire(*fields), Exception)
