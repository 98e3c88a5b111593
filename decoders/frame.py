"""The typed frame every codec produces and consumes.

A :class:`Frame` is what a meter (or the head-end) said, in protocol terms but without wire
details: who (``address``), what (``function``, ``identifier``), in which direction, with
which data items. ``header`` keeps the protocol-specific header fields that a faithful
re-encoding needs (meter type, preamble length, identifier byte order, sequence bits…), so
``encode(decode(x)) == x`` holds for every valid frame.

A :class:`DataItem` is one value the frame carries: ``name`` from the template's
data-identifier catalog (``current_volume``), ``value`` typed (``Decimal`` for quantities,
``datetime`` for clocks, ``bool``/``str`` for states, ``bytes`` for data the catalog does not
describe), ``unit`` as the protocol states it (``m3``, ``kWh``, ``MWh*100``), ``id`` the data
identifier or record it came from. Report templates (``decoders.reports``) turn items into
canonical readings and device events.
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any, Final, Literal

import msgspec

__all__ = ["NEED_DATA", "DataItem", "Direction", "Frame", "NeedData", "to_jsonable"]

Direction = Literal["request", "reply", "report"]
"""``request``: head-end to device; ``reply``: the device answering a request; ``report``:
the device speaking unasked (DTU registration and heartbeat, concentrator login, push)."""


class NeedData(Enum):
    """What a framer returns when the buffer holds no complete frame yet."""

    NEED_DATA = "need_data"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


class DataItem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One value carried by a frame (see the module docstring)."""

    name: str
    value: Any
    unit: str = ""
    id: str = ""
    attrs: dict[str, Any] | None = None


class Frame(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One decoded frame (see the module docstring)."""

    protocol: str
    direction: Direction
    function: str
    address: str = ""
    control: int = 0
    abnormal: bool = False
    identifier: str | None = None
    sequence: int | None = None
    header: dict[str, Any] = msgspec.field(default_factory=dict)
    items: tuple[DataItem, ...] = ()

    def item(self, name: str) -> DataItem | None:
        """The first item called ``name``, or ``None``."""
        for item in self.items:
            if item.name == name:
                return item
        return None

    def values(self) -> dict[str, Any]:
        """``{item name: value}`` (the first item of each name)."""
        out: dict[str, Any] = {}
        for item in self.items:
            out.setdefault(item.name, item.value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: decimals as strings, times ISO 8601, bytes as hex."""
        doc: dict[str, Any] = {"protocol": self.protocol, "direction": self.direction,
                               "address": self.address, "control": f"0x{self.control:02X}",
                               "function": self.function, "abnormal": self.abnormal}
        if self.identifier is not None:
            doc["identifier"] = self.identifier
        if self.sequence is not None:
            doc["sequence"] = self.sequence
        doc["header"] = to_jsonable(self.header)
        doc["items"] = [item_to_dict(i) for i in self.items]
        return doc


def item_to_dict(item: DataItem) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": item.name, "value": to_jsonable(item.value)}
    if item.unit:
        doc["unit"] = item.unit
    if item.id:
        doc["id"] = item.id
    if item.attrs:
        doc["attrs"] = to_jsonable(item.attrs)
    return doc


def to_jsonable(value: Any) -> Any:
    """Convert decoded values to JSON types without losing precision."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex(" ").upper()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, msgspec.Struct):
        return to_jsonable(msgspec.structs.asdict(value))
    return str(value)
