"""Modbus register maps: what a device keeps at which address, as a template.

A Modbus frame says "registers 0x0100..0x0107 hold 2A 4C ..."; which of them is the total
volume, in which type, word order, scale and unit, is device specific. A register map
(``decoders/protocols/modbus-maps/*.yaml``, format ``unimeter-modbus-map/1``) says it,
and binds to the protocol as a variant: ``modbus-rtu:<map>``, ``modbus-tcp:<map>``.

Strategy: the map is validated once; its registers are grouped into read *blocks*
(contiguous per table, at most 125 registers or 2000 bits, small gaps bridged) that
``read_now`` requests; a reply is turned into named items with the request's start
address in hand. Floats are given as the shortest decimal that round-trips the IEEE value
(``5866.143``, not ``5866.14306640625``); integers with ``decimals`` become exact Decimals.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from decoders.errors import EncodeError, TemplateError
from decoders.frame import DataItem
from decoders.template.loader import format_path, line_of, load_document

__all__ = ["MAP_DIR", "Block", "RegisterMap", "load_register_map", "load_register_maps"]

MAP_DIR = Path(__file__).parent / "protocols" / "modbus-maps"

Table = Literal["coil", "discrete", "holding", "input"]
RegisterType = Literal["bool", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                       "float32", "float64", "string"]
_WORDS = {"bool": 1, "uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "uint64": 4,
          "int64": 4, "float32": 2, "float64": 4}
_FORMAT = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i", "uint64": ">Q",
           "int64": ">q", "float32": ">f", "float64": ">d"}
_READ = {"coil": "read_coils", "discrete": "read_discrete_inputs",
         "holding": "read_holding_registers", "input": "read_input_registers"}
_TABLE_OF = {v: k for k, v in _READ.items()}
_TABLE_ORDER = {"holding": 0, "input": 1, "coil": 2, "discrete": 3}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegisterSpec(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    address: int = Field(ge=0, le=0xFFFF)
    type: RegisterType = "uint16"
    table: Table | None = None
    word_order: Literal["big", "little"] | None = None
    words: int | None = Field(None, ge=1, le=64)   # for strings
    decimals: int | None = Field(None, ge=0, le=9)
    scale: str | None = None                        # a decimal multiplier, e.g. "0.001"
    unit: str = ""
    description: str = ""


class MapCommandSpec(_Model):
    function: Literal["write_single_coil", "write_single_register", "write_multiple_registers"]
    address: int = Field(ge=0, le=0xFFFF)
    value: Any = None
    param: str | None = None
    type: RegisterType = "uint16"
    word_order: Literal["big", "little"] = "big"

    def items(self, params: Mapping[str, Any]) -> tuple[str, list[DataItem]]:
        value = params.get(self.param) if self.param else self.value
        if value is None:
            raise EncodeError(f"needs parameter {self.param!r}", protocol="modbus",
                              field=self.param)
        if self.function == "write_single_coil":
            return self.function, [DataItem(name="address", value=self.address),
                                   DataItem(name="value", value=bool(value))]
        words = _to_words(value, self.type, self.word_order)
        if self.function == "write_single_register":
            if len(words) != 1:
                raise EncodeError(f"{self.type} needs {len(words)} registers: use "
                                  "write_multiple_registers", protocol="modbus")
            return self.function, [DataItem(name="address", value=self.address),
                                   DataItem(name="value", value=words[0])]
        return self.function, [DataItem(name="start_address", value=self.address),
                               DataItem(name="values", value=words)]


class MapModel(_Model):
    format: Literal["unimeter-modbus-map/1"]
    map: str = Field(pattern=r"^[a-z][a-z0-9_.\-]*$")
    title: str
    table: Table = "holding"
    word_order: Literal["big", "little"] = "big"
    max_gap: int = Field(8, ge=0, le=100)
    registers: list[RegisterSpec] = Field(min_length=1)
    commands: dict[str, MapCommandSpec] = Field(default_factory=dict)
    description: str = ""


def _to_words(value: Any, kind: str, word_order: str) -> list[int]:
    if kind == "bool":
        return [1 if value else 0]
    fmt = _FORMAT.get(kind)
    if fmt is None:
        raise EncodeError(f"cannot write a {kind}", protocol="modbus")
    number = float(value) if kind.startswith("float") else int(value)
    raw = struct.pack(fmt, number)
    words = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    return words[::-1] if word_order == "little" else words


@dataclass(frozen=True)
class Block:
    """One read request covering several registers of one table."""

    table: str
    start: int
    quantity: int

    @property
    def function(self) -> str:
        return _READ[self.table]


class RegisterMap:
    """A compiled register map (see the module docstring)."""

    def __init__(self, model: MapModel) -> None:
        self.model = model
        self.name = model.map
        self.title = model.title
        self.commands = dict(model.commands)
        self.registers = sorted(model.registers,
                                key=lambda r: (_TABLE_ORDER[self._table(r)], r.address))
        self.blocks = self._blocks()

    def _table(self, register: RegisterSpec) -> str:
        return register.table or self.model.table

    def _words(self, register: RegisterSpec) -> int:
        if register.type == "string":
            return register.words or 1
        return _WORDS[register.type]

    def _blocks(self) -> list[Block]:
        blocks: list[Block] = []
        for register in self.registers:
            table = self._table(register)
            limit = 2000 if table in ("coil", "discrete") else 125
            end = register.address + self._words(register)
            last = blocks[-1] if blocks else None
            if last is not None and last.table == table and \
                    register.address - (last.start + last.quantity) <= self.model.max_gap and \
                    end - last.start <= limit:
                blocks[-1] = Block(table, last.start,
                                   max(last.quantity, end - last.start))
            else:
                blocks.append(Block(table, register.address, end - register.address))
        return blocks

    def decode(self, function: str, start: int, raw: Sequence[Any]) -> list[DataItem]:
        """Named items of the registers of ``raw`` (read by ``function`` from ``start``)."""
        table = _TABLE_OF.get(function)
        items: list[DataItem] = []
        for register in self.registers:
            if self._table(register) != table:
                continue
            offset = register.address - start
            words = self._words(register)
            if offset < 0 or offset + words > len(raw):
                continue
            chunk = list(raw[offset:offset + words])
            items.append(DataItem(name=register.name, value=self._value(register, chunk),
                                  unit=register.unit, id=f"{table}:{register.address}"))
        return items

    def encode(self, values: Mapping[str, Any]) -> dict[str, dict[int, int]]:
        """Register words of named values — what a device (or the simulator) keeps in its
        tables: ``{table: {address: word (or 0/1 for bits)}}``. The inverse of
        :meth:`decode`; unnamed registers are left out."""
        out: dict[str, dict[int, int]] = {}
        for register in self.registers:
            if register.name not in values:
                continue
            value = values[register.name]
            table = self._table(register)
            kind = register.type
            if kind == "string":
                raw = str(value).encode("ascii")[:2 * self._words(register)]
                raw = raw.ljust(2 * self._words(register), b"\x00")
                words = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
            else:
                number: Any = value
                if register.scale is not None:
                    number = Decimal(str(number)) / Decimal(register.scale)
                if register.decimals is not None:
                    number = Decimal(str(number)).scaleb(register.decimals)
                if not kind.startswith("float") and kind != "bool":
                    number = int(Decimal(str(number)).to_integral_value())
                words = _to_words(number, kind, register.word_order or self.model.word_order)
            cells = out.setdefault(table, {})
            for offset, word in enumerate(words):
                cells[register.address + offset] = word
        return out

    def _value(self, register: RegisterSpec, words: list[Any]) -> Any:
        kind = register.type
        if kind == "bool":
            return bool(words[0])
        order = register.word_order or self.model.word_order
        if order == "little":
            words = words[::-1]
        raw = b"".join(int(w).to_bytes(2, "big") for w in words)
        if kind == "string":
            return raw.rstrip(b"\x00 ").decode("ascii", "replace")
        (number,) = struct.unpack(_FORMAT[kind], raw)
        if kind.startswith("float"):
            shortest = str(np.float32(number)) if kind == "float32" else repr(number)
            value = Decimal(shortest)
        else:
            value = Decimal(number)
        if register.decimals is not None:
            value = value.scaleb(-register.decimals)
        if register.scale is not None:
            value = value * Decimal(register.scale)
        if register.decimals is None and register.scale is None and \
                not kind.startswith("float"):
            return int(number)
        return value


def load_register_map(path: Path | str, *, text: str | None = None) -> RegisterMap:
    file = str(path)
    data, node = load_document(path, text)
    try:
        model = MapModel.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        reason = f"unknown key {loc[-1]!r}" if first["type"] == "extra_forbidden" \
            else first["msg"]
        raise TemplateError(reason, file=file, path=format_path(loc),
                            line=line_of(node, loc)) from None
    names = [r.name for r in model.registers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TemplateError(f"register names repeat: {duplicates}", file=file,
                            path="registers")
    for index, register in enumerate(model.registers):
        if register.type == "string" and register.words is None:
            raise TemplateError("a string register needs 'words'", file=file,
                                path=f"registers.{index}.words",
                                line=line_of(node, ("registers", index)))
        if register.scale is not None:
            try:
                Decimal(register.scale)
            except ArithmeticError:
                raise TemplateError(f"scale {register.scale!r} is not a decimal", file=file,
                                    path=f"registers.{index}.scale") from None
    return RegisterMap(model)


_MAPS: dict[str, RegisterMap] | None = None


def load_register_maps() -> dict[str, RegisterMap]:
    """The built-in register maps, loaded once."""
    global _MAPS
    if _MAPS is None:
        _MAPS = {m.name: m for m in (load_register_map(p)
                                     for p in sorted(MAP_DIR.glob("*.yaml")))}
    return _MAPS
