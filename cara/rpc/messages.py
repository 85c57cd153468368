"""The RPC messages: each frame is one msgpack array whose first item says what it is.

The shapes (all ids are non-negative ints; ``params``/``results`` are cara structs as msgpack maps
keyed by field number, or ``None`` for an empty struct)::

    [CALL,    question_id, target, interface_id, method_index, params]
    [RETURN,  question_id, results]
    [ERROR,   question_id, kind, type_name, message, traceback_text_or_None]
    [FINISH,  question_id]                      caller no longer wants the answer: cancel it
    [RELEASE, [export_id, count, export_id, count, ...]]
    [ABORT,   message]                          sender is closing the connection because of it

``target`` is either an export id of the receiver (an int), or ``[interface_id]``: the
implementation the receiver registered for that interface (Cap'n Proto's bootstrap, addressed by
interface id, so no round trip is needed before the first call).

Capabilities inside params and results are msgpack ``ExtType``s whose data is a msgpack uint:

* :data:`EXT_SENDER_HOSTED` -- an export id in the *sender's* export table; the receiver imports it.
  Every occurrence counts one reference, which the receiver gives back with ``RELEASE``.
* :data:`EXT_RECEIVER_HOSTED` -- an export id in the *receiver's* own table (a capability coming
  home); the receiver uses its local object and no reference is counted.

The numbers are small ints so that a call frame costs a handful of bytes around the params.
"""

from __future__ import annotations

__all__ = [
    "ABORT",
    "CALL",
    "ERROR",
    "EXT_RECEIVER_HOSTED",
    "EXT_SENDER_HOSTED",
    "FINISH",
    "MESSAGE_NAMES",
    "RELEASE",
    "RETURN",
]

CALL = 0
RETURN = 1
ERROR = 2
FINISH = 3
RELEASE = 4
ABORT = 5

MESSAGE_NAMES = {
    CALL: "call", RETURN: "return", ERROR: "error", FINISH: "finish", RELEASE: "release",
    ABORT: "abort",
}

EXT_SENDER_HOSTED = 1
EXT_RECEIVER_HOSTED = 2
