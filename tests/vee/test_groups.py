"""Rule sets: loading, errors with file/path/reason, group resolution per meter."""

from __future__ import annotations

from pathlib import Path

import pytest

from vee.errors import RuleConfigError
from vee.groups import default_rules_path, load_rule_set, parse_group, parse_rule_set
from vee.model import MeterInfo

SET = """
history: {average_daily_use: {residential: 1.0}, classes: {low: 0.5, high: null}}
groups:
  gas: {applies_to: {medium: gas}, rules: [spike]}
  gas-res: {applies_to: {medium: gas, customer_type: [residential]}, rules: [max_flow]}
  g4: {applies_to: {device_type: [gc-g4]}, rules: [negative_consumption]}
  low-users: {applies_to: {history_class: [low]}, rules: [zero_consumption]}
  any: {rules: [missing]}
  est: {purpose: estimation, methods: [linear]}
  est-gas: {purpose: estimation, applies_to: {medium: gas}, methods: [flat]}
  first: {purpose: initial_load, rules: [future_timestamp]}
  manual: {purpose: manual_override, rules: [max_flow]}
meters:
  GM-9: {groups: {validation: any}, params: {max_flow: {tolerance_pct: 50}}}
  GM-8: {params: {max_flow: {tolerance_pct: 50}}, attributes: {qmax: 4, size: G2.5}}
"""


def test_the_shipped_rule_set_loads() -> None:
    rs = load_rule_set(default_rules_path())
    assert {g.purpose for g in rs.groups.values()} == {
        "validation", "estimation", "initial_load", "manual_override"}
    assert rs.calendar.timezone == "Asia/Shanghai"


def test_most_specific_group_wins_and_meters_override() -> None:
    rs = parse_rule_set(SET, source="set.yaml")
    res = rs.resolve(MeterInfo("M1", medium="gas", customer_type="residential"))
    assert res.validation.id == "gas-res"
    assert res.estimation.id == "est-gas"
    assert res.initial_load.id == "first"
    assert res.manual_override.id == "manual"
    assert rs.resolve(MeterInfo("M2", medium="gas", customer_type="commercial")
                      ).validation.id == "gas"
    assert rs.resolve(MeterInfo("M3", medium="gas", device_type="gc-g4",
                                customer_type="residential")).validation.id == "g4"
    assert rs.resolve(MeterInfo("M4", medium="water")).validation.id == "any"
    assert rs.resolve(MeterInfo("M5", medium="water"), history_class="low"
                      ).validation.id == "low-users"
    # the ledger's vee_group chooses before applies_to; the rule file's meters before both
    assert rs.resolve(MeterInfo("M6", medium="gas", vee_group="g4")).validation.id == "g4"
    assert rs.resolve(MeterInfo("GM-9", medium="gas", vee_group="g4")).validation.id == "any"


def test_per_meter_parameters_override_the_group() -> None:
    rs = parse_rule_set(SET)
    group = rs.resolve(MeterInfo("GM-8", medium="gas", customer_type="residential")).validation
    assert group.rules[0].params.tolerance_pct == 50  # type: ignore[attr-defined]
    other = rs.resolve(MeterInfo("M1", medium="gas", customer_type="residential")).validation
    assert other.rules[0].params.tolerance_pct == 10  # type: ignore[attr-defined]
    info = rs.meter_info("GM-8")
    assert (info.qmax, info.size, info.known) == (4, "G2.5", False)


@pytest.mark.parametrize(("text", "where", "reason"), [
    ("groups: {g: {rules: [spkie]}}", "groups.g.rules[0]", "unknown rule 'spkie'"),
    ("groups: {g: {rules: [{rule: spike, tolerance_pct: -5}]}}",
     "groups.g.rules[0].tolerance_pct", "greater than 0"),
    ("groups: {g: {rules: [{rule: spike, tolerence_pct: 5}]}}",
     "groups.g.rules[0].tolerence_pct", "unknown parameter"),
    ("groups: {g: {rules: [{rule: linear, max_gap: soon}]}}", "groups.g.rules[0]",
     "unknown rule 'linear'"),
    ("groups: {e: {purpose: estimation, methods: [{method: linear, max_gap: soon}]}}",
     "groups.e.methods[0].max_gap", "not a duration"),
    ("groups: {g: {purpose: cleanup, rules: []}}", "groups.g.purpose", "unknown purpose"),
    ("groups: {g: {rules: [], colour: red}}", "groups.g.colour", "unknown key"),
    ("groups: {g: {rules: []}}\ncalendar: {holidays: [2026-13-01]}", "calendar.holidays[0]",
     "not a date"),
    ("groups: {g: {rules: []}}\nmeters: {M1: {groups: {validation: nope}}}",
     "meters.M1.groups.validation", "unknown group 'nope'"),
    ("groups: {g: {rules: []}}\nstate: {window_points: 1}", "state.window_points",
     "an integer from 2"),
    ("groups: [", "set.yaml:1", "not valid YAML"),
    ("groups: {g: {rules: []}}\nhistory: {average_daily_use: {steam: {residential: 2}}}",
     "history.average_daily_use.steam", "only a medium"),
    ("groups: {g: {rules: []}}\nhistory: {average_daily_use: {gas: {residential: lots}}}",
     "history.average_daily_use.gas.residential", "a number is expected"),
    ("groups: {g: {rules: []}}\nhistory: {average_daily_use: [1, 2]}",
     "history.average_daily_use", "a mapping of name to number"),
    ("groups: {g: {rules: []}}\nhistory: {classes: {water: {low: x}}}",
     "history.classes.water.low", "a number is expected"),
    ("groups: {g: {rules: []}}\nhistory: {seasonal: {gas: [1, 2]}}", "history.seasonal.gas",
     "12 month factors"),
    ("groups: {g: {rules: []}}\nhistory: {seasonal: {gaz: [1,1,1,1,1,1,1,1,1,1,1,1]}}",
     "history.seasonal.gaz", "not a medium"),
    ("groups: {g: {rules: []}}\nhistory: {seasonal: {gas: [1,1,1,1,1,0,1,1,1,1,1,1]}}",
     "history.seasonal.gas", "greater than 0"),
])
def test_mistakes_name_file_path_and_reason(text: str, where: str, reason: str) -> None:
    with pytest.raises(RuleConfigError) as err:
        parse_rule_set(text, source="set.yaml")
    assert where in (err.value.where or "")
    assert (err.value.where or "").startswith("set.yaml")
    assert reason in err.value.message
    assert err.value.hint


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuleConfigError, match="cannot read the rule set"):
        load_rule_set(tmp_path / "nope.yaml")


def test_ledger_group_specs_in_every_accepted_form() -> None:
    simple = parse_group("gas-residential", "rules: [spike, negative_consumption, stuck_register]",
                         source="ledger.vee_groups")
    assert [r.id for r in simple.rules] == ["spike", "negative_consumption", "zero_consumption"]
    with_ids = parse_group("g", "rules:\n  - id: absolute_limits\n    upper: 5\n", source="l")
    assert with_ids.rules[0].params.upper == 5  # type: ignore[attr-defined]
    keyed = parse_group("g", "- {max_flow: {tolerance_pct: 20}}", source="l")
    assert keyed.rules[0].params.tolerance_pct == 20  # type: ignore[attr-defined]
    rs = parse_rule_set(SET).with_groups({"gas": keyed})
    assert rs.resolve(MeterInfo("M2", medium="gas")).validation.rules[0].id == "max_flow"
