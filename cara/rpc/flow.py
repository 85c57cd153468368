"""Flow control for streaming calls (``-> stream`` methods), without I/O or clocks.

A caller of a streaming method does not wait for each reply: it may go on sending while the
bytes of the calls in flight (sent, not yet returned) fit in a *window*. :class:`Window` is that
window and how it adapts, after libcapnp's ``AdaptiveFlowController`` (rpc.c++): every return
measures the round trip and the rate at which the other side took the bytes; the window becomes
the estimated bandwidth-delay product (rate x smallest round trip seen) times a growth factor,
so the sender always offers a little more than the path carried and so finds out when it can
carry more. It doubles per round trip at most while starting (until it stops growing for three
rounds), then grows by 5/4 and shrinks by 7/8 per round trip at most, within ``[minimum,
maximum]``. A consumer that slows down thus shrinks the window, and the producer waits instead
of piling up bytes in buffers.

The caller tells it what happens, with the time (any monotonic clock, in seconds)::

    w = Window()
    ticket = w.sent(size, now)      # a call of `size` bytes went out
    w.ready                         # may the next one go now?
    w.returned(ticket, now)         # its return arrived (success or error alike)

``ready`` also allows one message beyond the window (the largest seen), so a message larger
than the window does not leave the path idle for a round trip, and bounds the number of calls
in flight (``max_calls``), since every call costs the receiver bookkeeping however small it is.
``resume`` tells a sender that waited for ``ready`` when to go on: at half of what ``ready``
allows, so that it sends in bursts rather than one call per return.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_INITIAL",
    "DEFAULT_MAXIMUM",
    "DEFAULT_MAX_CALLS",
    "DEFAULT_MINIMUM",
    "Sent",
    "Window",
]

#: Window sizes in bytes: where a stream starts, and the bounds it adapts within.
DEFAULT_INITIAL = 256 * 1024
DEFAULT_MINIMUM = 64 * 1024
DEFAULT_MAXIMUM = 16 * 1024 * 1024
#: At most this many calls of one stream in flight, whatever their size.
DEFAULT_MAX_CALLS = 2048
#: Rounds without meaningful growth that end the start-up phase.
_STARTUP_EXIT_ROUNDS = 3


class Sent:
    """What :meth:`Window.sent` recorded about one call, handed back to :meth:`Window.returned`."""

    __slots__ = ("delivered_at_send", "delivered_time_at_send", "returned", "size", "time",
                 "window", "window_full")

    def __init__(self, size: int, time: float, delivered: int, delivered_time: float | None,
                 window: int, window_full: bool) -> None:
        self.size = size
        self.time = time
        self.delivered_at_send = delivered
        self.delivered_time_at_send = delivered_time
        self.window = window
        self.window_full = window_full
        self.returned = False


class Window:
    """The adaptive window of one stream (see the module docstring). ``adaptive=False`` keeps it
    at ``initial`` (libcapnp's fixed-window controller)."""

    __slots__ = ("adaptive", "calls", "delivered", "delivered_time", "first_ack", "in_flight",
                 "last_round_window", "max_calls", "max_message", "maximum", "min_rtt",
                 "minimum", "round_start", "rounds_flat", "startup", "window")

    def __init__(self, initial: int = DEFAULT_INITIAL, *, minimum: int = DEFAULT_MINIMUM,
                 maximum: int = DEFAULT_MAXIMUM, max_calls: int = DEFAULT_MAX_CALLS,
                 adaptive: bool = True) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError(f"window bounds must satisfy 0 < minimum <= maximum, got "
                             f"{minimum} and {maximum}")
        if max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, got {max_calls}")
        self.adaptive = adaptive
        self.minimum = minimum
        self.maximum = maximum
        self.window = min(max(initial, minimum), maximum) if adaptive else max(initial, 1)
        self.max_calls = max_calls
        #: Bytes and calls sent and not returned; the largest message sent so far.
        self.in_flight = 0
        self.calls = 0
        self.max_message = 0
        # the rate estimate: bytes returned in all, when the last return came, the first one
        self.delivered = 0
        self.delivered_time: float | None = None
        self.first_ack: tuple[float, int] | None = None
        self.min_rtt = float("inf")
        # start-up: the window may double per round trip until it stops growing
        self.startup = True
        self.rounds_flat = 0
        self.last_round_window = 0
        self.round_start: float | None = None

    def __repr__(self) -> str:
        return (f"<Window {self.window} bytes, {self.in_flight} in flight in {self.calls} "
                f"calls{', starting' if self.startup and self.adaptive else ''}>")

    @property
    def ready(self) -> bool:
        """Whether another call may be sent now."""
        return self.in_flight < self.window + self.max_message and self.calls < self.max_calls

    @property
    def resume(self) -> bool:
        """Whether a sender that waited for room should go on now: once at most half of what
        :attr:`ready` allows is in flight, so that it sends a burst rather than one call per
        return (fewer wake-ups of both sides)."""
        return self.in_flight <= (self.window + self.max_message) // 2 and \
            self.calls < self.max_calls

    @property
    def idle(self) -> bool:
        """Whether no call is in flight."""
        return self.calls == 0

    def sent(self, size: int, now: float) -> Sent:
        """A call of ``size`` bytes was sent at ``now``; keep the ticket for :meth:`returned`."""
        if size > self.max_message:
            self.max_message = size
        self.in_flight += size
        self.calls += 1
        return Sent(size, now, self.delivered, self.delivered_time, self.window, not self.ready)

    def returned(self, sent: Sent, now: float) -> None:
        """The call of ticket ``sent`` returned at ``now`` (a second report is ignored)."""
        if sent.returned:
            return
        sent.returned = True
        self.in_flight -= sent.size
        self.calls -= 1
        self.delivered += sent.size
        self.delivered_time = now
        rtt = now - sent.time
        if rtt < self.min_rtt:
            self.min_rtt = rtt
        if not self.adaptive:
            return
        if self.first_ack is None:  # one return gives no rate yet: remember it as a baseline
            self.first_ack = (now, self.delivered)
            return
        base_time, base_delivered = self.first_ack
        if sent.delivered_time_at_send is not None:  # the rate over this call's round trip
            base_time, base_delivered = sent.delivered_time_at_send, sent.delivered_at_send
        interval = now - base_time
        if interval <= 0:
            return
        grow = self._grow
        # the bandwidth-delay product, times the growth factor
        new = int(grow((self.delivered - base_delivered) * self.min_rtt) / interval)
        new = min(new, int(grow(sent.window)))  # at most the growth factor per round trip
        if sent.window_full:
            new = max(new, sent.window * 7 // 8)  # at most 7/8 smaller per round trip
        else:
            # the caller did not fill the window: the rate says nothing about the path's
            # capacity, so do not shrink
            new = max(new, self.window)
        self.window = max(min(new, self.maximum), self.minimum)
        if self.startup and (self.round_start is None or sent.time >= self.round_start):
            if self.window > self.last_round_window * 5 // 4:
                self.rounds_flat = 0
            else:
                self.rounds_flat += 1
                if self.rounds_flat >= _STARTUP_EXIT_ROUNDS:
                    self.startup = False
            self.round_start = now
            self.last_round_window = self.window

    def _grow(self, value: float) -> float:
        return value * 2 if self.startup else value * 5 / 4
