"""Register maps encode named values into register words (what a device keeps) and decode
them back (what a head-end reads)."""

from __future__ import annotations

from decimal import Decimal

from decoders.modbus_map import load_register_maps


def test_encode_decode_round_trip_for_every_map() -> None:
    for rmap in load_register_maps().values():
        values: dict[str, object] = {}
        for register in rmap.registers:
            if register.type == "bool":
                values[register.name] = True
            elif register.type == "string":
                values[register.name] = "AB12"
            elif register.type.startswith("float"):
                values[register.name] = Decimal("3.25")
            elif register.decimals or register.scale:
                values[register.name] = Decimal("1234.5")
            else:
                values[register.name] = 42
        cells = rmap.encode(values)
        decoded: dict[str, object] = {}
        for block in rmap.blocks:
            table = cells.get(block.table, {})
            raw = [table.get(a, 0) for a in range(block.start, block.start + block.quantity)]
            for item in rmap.decode(block.function, block.start, raw):
                decoded[item.name] = item.value
        for name, value in values.items():
            assert decoded[name] == value, (rmap.name, name, decoded[name], value)


def test_unnamed_registers_are_left_out() -> None:
    rmap = load_register_maps()["flow-computer"]
    cells = rmap.encode({"volume_total": Decimal("12345.678")})
    assert cells == {"holding": {0: 188, 1: 24910}}  # 12345678 as a big-endian uint32
