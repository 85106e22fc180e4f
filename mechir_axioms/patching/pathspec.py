"""What a path is: a sender head and the receivers it is patched into (heads' queries, keys or values, or the
final residual stream), and the forms users name them in ("heads", "final", "all", (layer, head[, "q"])).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..core.errors import SettingsError
from ..models.rankers import Ranker

INPUTS = ("q", "k", "v")
FINAL = "final"


@dataclass(frozen=True)
class Receiver:
    """One receiving component: some inputs (q, k, v) of head `head` at `layer`, or the final residual stream
    (head None; `layer` is then the number of layers)."""

    layer: int
    head: int | None = None
    inputs: tuple[str, ...] = INPUTS

    @property
    def is_final(self) -> bool:
        return self.head is None

    def __str__(self) -> str:
        if self.is_final:
            return "score"
        suffix = "" if self.inputs == INPUTS else "." + "".join(self.inputs)
        return f"{self.layer}.{self.head}{suffix}"


@dataclass(frozen=True)
class PathSpec:
    """One measured path: a sender head into a set of receivers, patched together."""

    sender: tuple[int, int]
    receivers: tuple[Receiver, ...]

    @property
    def label(self) -> str:
        names = ",".join(str(receiver) for receiver in self.receivers) or "none"
        return f"{self.sender[0]}.{self.sender[1]}>{names}"


def every_head(ranker: Ranker) -> list[tuple[int, int]]:
    """Every (layer, head) of the hooked stack, layer by layer."""
    return [(layer, head) for layer in range(ranker.n_layers) for head in range(ranker.n_heads)]


def _head(item: Any, ranker: Ranker, role: str) -> tuple[int, int]:
    """A (layer, head) pair checked against the model; a clear error names the bad item."""
    try:
        layer, head = (int(value) for value in item)
    except (TypeError, ValueError):
        raise SettingsError(f"{role} {item!r} is not a (layer, head) pair") from None
    if not (0 <= layer < ranker.n_layers and 0 <= head < ranker.n_heads):
        raise SettingsError(f"{role} ({layer}, {head}) does not exist: the model has {ranker.n_layers} layers x "
                            f"{ranker.n_heads} heads")
    return layer, head


def parse_senders(ranker: Ranker, senders: str | Iterable[Any]) -> list[tuple[int, int]]:
    """"heads" (every head) or a list of (layer, head) pairs."""
    if isinstance(senders, str):
        if senders != "heads":
            raise SettingsError(f"senders={senders!r} is not valid; use \"heads\" or a list of (layer, head) pairs")
        return every_head(ranker)
    heads = [_head(item, ranker, "sender") for item in senders]
    if not heads:
        raise SettingsError("senders is empty; name at least one (layer, head) or use \"heads\"")
    return heads


def parse_receivers(ranker: Ranker, receivers: str | Iterable[Any]) -> tuple[Receiver, ...]:
    """One receiver set: "final" (the final residual stream), "all" (every head's q, k and v and the final
    residual), or a list whose items are "final", (layer, head) for a head's q, k and v, or (layer, head, which)
    with which one of "q", "k", "v" or a combination such as "qk"."""
    if isinstance(receivers, str):
        if receivers == FINAL:
            return (Receiver(ranker.n_layers),)
        if receivers == "all":
            return (*(Receiver(layer, head) for layer, head in every_head(ranker)), Receiver(ranker.n_layers))
        raise SettingsError(f"receivers={receivers!r} is not valid; use \"final\", \"all\" or a list of "
                            "(layer, head[, \"q\"|\"k\"|\"v\"]) and \"final\"")
    parsed = []
    for item in receivers:
        if item == FINAL:
            parsed.append(Receiver(ranker.n_layers))
            continue
        item = tuple(item)
        which = item[2] if len(item) == 3 else "qkv"
        inputs = tuple(name for name in INPUTS if name in str(which))
        if len(item) not in (2, 3) or not inputs or set(str(which)) - set("qkv"):
            raise SettingsError(f"receiver {item!r} is not valid; use (layer, head), (layer, head, \"q\"|\"k\"|\"v\") "
                                "or \"final\"")
        layer, head = _head(item[:2], ranker, "receiver")
        parsed.append(Receiver(layer, head, inputs))
    return tuple(dict.fromkeys(parsed))


def kv_head(ranker: Ranker, name: str, head: int) -> int:
    """The head of a q/k/v site that serves query head `head` (grouped-query attention shares keys and values)."""
    count = ranker.sites[name].n_heads or ranker.n_heads
    return head // (ranker.n_heads // count)
