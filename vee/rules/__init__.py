"""The built-in validation rules and estimation methods (importing this registers them).

| module | rules |
|---|---|
| ``data`` | missing, duplicate, interval_unit, inactive_device, prolonged_estimation |
| ``time`` | future_timestamp, clock_drift, clock_set |
| ``register`` | rollover, negative_consumption, register_delta |
| ``limits`` | absolute_limits, max_flow, high_low, consecutive_jump, spike, sum_check, |
|  | zero_consumption |
| ``device`` | device_status, tamper, battery_low, reverse_flow, leak, overload, power_fail, |
|  | valve_consistency |
| ``estimation`` | linear, flat, like_day, average_daily, scaled_to_register, zero |
"""

from vee.rules import data, device, estimation, limits, register, time

__all__ = ["data", "device", "estimation", "limits", "register", "time"]
