"""The protocol registry: built-ins, aliases, variants, entry points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from decoders import UnknownProtocolError, get_protocol, protocol_registry
from decoders.registry import TEMPLATE_DIR, ProtocolRegistry
from decoders.template.protocol import TemplateProtocol


def test_builtins_and_aliases() -> None:
    names = protocol_registry.names()
    assert {"cjt188-2004", "dlt645-2007", "dlt645-1997", "dtu-text", "dtu-binary"} <= set(names)
    assert get_protocol("cjt188") is get_protocol("cjt188-2004")
    assert get_protocol("dlt645").name == "dlt645-2007"


def test_variants_are_cached_siblings() -> None:
    low = get_protocol("cjt188-2004:di-low-first")
    assert low is get_protocol("cjt188-2004:di-low-first")
    assert low.variant == "di-low-first"
    cmd = low.encode_command("read_now", "78330011223344", {"meter_type": "gas"})
    assert b"\x1f\x90" in cmd.data


def test_unknown_protocol_lists_the_known_ones() -> None:
    with pytest.raises(UnknownProtocolError) as caught:
        get_protocol("cjt189")
    assert "cjt188-2004" in (caught.value.hint or "")


def test_entry_points_add_third_party_protocols(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    text = (TEMPLATE_DIR / "dlt645-1997.yaml").read_text(encoding="utf-8")
    vendor = tmp_path / "acme-645.yaml"
    vendor.write_text(text.replace("protocol: dlt645-1997", "protocol: acme-645"))

    class FakeEntryPoint:
        name, value = "acme", "acme_meters:templates"

        def load(self) -> Any:
            return vendor

    monkeypatch.setattr("decoders.registry.entry_points",
                        lambda group: [FakeEntryPoint()] if group == "unimeter.protocols"
                        else [])
    fresh = ProtocolRegistry()
    assert "acme-645" in fresh.names()
    assert isinstance(fresh.get("acme-645"), TemplateProtocol)
    assert fresh.origin("acme-645").startswith("entry point")


def test_register_template_at_run_time(tmp_path: Path) -> None:
    text = (TEMPLATE_DIR / "cjt188-2004.yaml").read_text(encoding="utf-8")
    path = tmp_path / "utility-188.yaml"
    path.write_text(text.replace("protocol: cjt188-2004", "protocol: utility-188"))
    fresh = ProtocolRegistry(plugins=False)
    fresh.register_template(path)
    assert fresh.get("utility-188").name == "utility-188"
    with pytest.raises(ValueError, match="already registered"):
        fresh.register_template(path)
