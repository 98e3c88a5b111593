"""Template mistakes are reported with the file, the path inside it, the line and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from decoders import TemplateError, load_link_template, load_template
from decoders.registry import TEMPLATE_DIR

CJT188 = (TEMPLATE_DIR / "cjt188-2004.yaml").read_text(encoding="utf-8")


def broken(old: str, new: str) -> str:
    assert old in CJT188, old
    return CJT188.replace(old, new, 1)


def load_error(text: str) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        load_template("my-vendor.yaml", text=text)
    return caught.value


def test_the_shipped_templates_load() -> None:
    for path in TEMPLATE_DIR.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        proto = load_link_template(path) if "\nkind: link" in text else load_template(path)
        assert proto.name == path.stem, "a template's file name is its protocol name"


def test_yaml_syntax_error_names_the_line() -> None:
    error = load_error(CJT188.replace("protocol: cjt188-2004", "protocol: [cjt188", 1))
    assert error.file == "my-vendor.yaml"
    assert error.line is not None
    assert "YAML" in error.reason


def test_misspelt_key_is_an_error_with_its_path_and_line() -> None:
    error = load_error(broken("    function: read_data\n    identifier: \"901F\"",
                              "    function: read_data\n    identifer: \"901F\""))
    assert error.path == "commands.read_now.identifer"
    assert "unknown key" in error.reason
    line = CJT188.splitlines().index("  read_now:") + 3
    assert error.line == line


def test_bad_value_type_names_the_element() -> None:
    error = load_error(broken("{name: current_volume, use: volume}",
                              "{name: current_volume, use: volume, decimals: many}"))
    assert error.path.startswith("catalog.901F.layouts.0.0.decimals")


def test_unknown_parameter() -> None:
    error = load_error(broken("order: $identifier_order", "order: $identifier_orderr"))
    assert "$identifier_orderr" in error.reason
    assert error.path == "elements.identifier.order"


def test_variant_setting_an_undeclared_parameter() -> None:
    error = load_error(broken("di-low-first: {identifier_order: little}",
                              "di-low-first: {identifier_odrer: little}"))
    assert error.path == "variants.di-low-first"


def test_unknown_table() -> None:
    error = load_error(broken("values: meter_types", "values: meter_kinds"))
    assert error.path == "header.0.values"
    assert "meter_kinds" in error.reason


def test_unknown_body_element() -> None:
    error = load_error(broken("elements: [identifier, sequence, items]}",
                              "elements: [identifier, sequense, items]}"))
    assert error.path.startswith("bodies.")
    assert "sequense" in error.reason


def test_unquoted_numeric_identifier_gets_a_hint() -> None:
    error = load_error(broken('  "8103":', "  8103:"))
    assert error.path.startswith("catalog")
    assert error.hint is not None
    assert "quote" in error.hint


def test_header_size_must_match_the_header_elements() -> None:
    error = load_error(broken("header_size: 11", "header_size: 12"))
    assert error.path == "envelope.header_size"


def test_command_with_unknown_identifier() -> None:
    error = load_error(broken('identifier: "A015"', 'identifier: "A0FF"'))
    assert error.path == "commands.sync_time.identifier"


def test_two_variable_elements_in_one_layout() -> None:
    error = load_error(broken("- - {name: settlement_day, type: bcd, size: 1}",
                              "- - {name: a, type: bytes, size: rest}\n"
                              "        - {name: b, type: bytes, size: rest}"))
    assert "rest" in error.reason


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as caught:
        load_template(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(caught.value)


def test_error_message_reads_well() -> None:
    error = load_error(broken("values: meter_types", "values: meter_kinds"))
    text = str(error)
    assert "my-vendor.yaml" in text
    assert "header.0.values" in text
    assert "—" in text
