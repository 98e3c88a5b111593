"""decoders — the sans-IO protocol engine of unimeter.

Bytes in, typed frames out; typed frames and unified commands in, bytes out. Nothing here
touches a socket, Kafka or a database (import-linter enforces it). This docstring is the
public API; everything listed in ``__all__`` is stable.

Protocols
    ``get_protocol(name)`` → :class:`Protocol`; ``name`` may carry a vendor variant,
    ``"cjt188-2004:di-low-first"``. ``protocol_names()`` lists them. Built in:
    ``cjt188-2004``, ``dlt645-2007``, ``dlt645-1997`` (frame templates in
    ``decoders/protocols/*.yaml``), the DTU link templates ``dtu-text``, ``dtu-binary``, and
    in Python ``modbus-rtu``, ``modbus-tcp`` (variant = a register map of
    ``decoders/protocols/modbus-maps/``: ``modbus-tcp:flow-computer``), ``mbus-en13757``,
    ``dlms-hdlc``, ``dlms-wrapper``, ``dlms-apdu`` and ``qgdw376.1``.
    Third-party packages add protocols through the ``unimeter.protocols`` entry-point group
    (a Protocol, a factory, or a path to templates — see :mod:`decoders.registry`);
    ``protocol_registry.register_template(path)`` adds a utility's own template at run time.

Framing — per link, sans-IO (:mod:`decoders.framing`)
    ``framer = proto.framer()`` (or ``Framer([*link.frame_specs(), *proto.frame_specs()])``
    for a DTU link carrying registration/heartbeat packets and meter frames);
    ``framer.feed(data)``; then ``framer.next_frame()`` until it returns :data:`NEED_DATA`.
    Frames come out whole (preamble included), found by their length field, never by
    searching for an end byte; garbage is skipped and counted (``framer.stats``,
    ``framer.take_garbage()`` for the dead-letter record); the buffer is bounded
    (``feed`` raises :class:`FramerOverflowError` when the caller does not drain it);
    ``framer.resync()`` on a link's idle timeout drops a partial frame that never completes;
    ``framer.last_spec`` says which protocol's spec matched.

Codec
    ``proto.decode(data) -> Frame`` for exactly one frame; ``proto.encode(frame) -> bytes``;
    ``encode(decode(x)) == x`` for every valid frame. A :class:`Frame` has ``protocol``,
    ``direction`` (request / reply / report), ``function``, ``address``, ``control``,
    ``abnormal``, ``identifier``, ``sequence``, ``header`` (protocol fields) and ``items``
    (:class:`DataItem`: ``name``, ``value`` — Decimal, int, str, bool, datetime, bytes,
    list — ``unit``, ``id``). ``frame.to_dict()`` is the JSON form.

Errors (:mod:`decoders.errors`) — each says whose fault it is (``fault``)
    :class:`DecodeError` (peer): :class:`FramingError`, :class:`LengthError`
    (:class:`TrailingBytesError`), :class:`ChecksumError`, :class:`FieldValueError`; each
    carries ``protocol``, ``field`` (path), ``offset``, ``excerpt`` (hex), ``reason`` and
    ``to_dict()``. Decoding raises these and nothing else. :class:`EncodeError` /
    :class:`CommandNotSupportedError` (caller), :class:`TemplateError` (configuration: file,
    path, line, reason), :class:`UnknownProtocolError`.

Commands — the unified catalog of ``devices/``, encoded per protocol
    ``proto.commands()`` lists what a protocol supports;
    ``cmd = proto.encode_command(name, address, params, sequence=n, timezone=tz)`` →
    :class:`CommandFrame` (``data`` to send, ``request`` frame, ``expects_reply``);
    ``proto.matches(cmd, reply_frame)`` (address, function, identifier, sequence);
    ``proto.interpret(cmd, reply_frame)`` → :class:`CommandOutcome` (``ok`` + ``data`` read
    back, or ``device_error`` + ``error_code``/``reason``). Parameters:

    ===================  ==============  =================================================
    command              protocols       parameters
    ===================  ==============  =================================================
    read_now             all three       dlt645: ``identifier`` (hex, default the forward
                                         active total)
    read_history         cjt188, dlt645  ``months_ago`` 1..12 (1 = the last settlement)
    valve_close          cjt188          —
    valve_arm_open       cjt188          — (variant ``free-valve`` sends the vendor codes)
    set_price            cjt188, dlt645  cjt188: ``prices`` [p1, p2, p3],
                                         ``step_limits`` [v1, v2], ``effective_day``;
                                         dlt645: ``price``, ``tariff`` (1..63), password
    top_up               cjt188          ``amount`` (CNY), ``purchase_sequence``
    sync_time            all three       ``time`` (aware datetime or ISO 8601)
    relay_trip           dlt645          ``password_level``, ``password``, ``operator``,
                                         ``valid_until``
    relay_close          dlt645          as relay_trip, plus ``mode``: close_allowed
                                         (default) or direct_close
    read_now             modbus:<map>    ``block`` (index of the map's read blocks);
                                         ``proto.apply_map(cmd, reply)`` names the values
    valve_*, set_report  modbus:<map>    as the register map declares (coil / register)
    _interval
    read_now             mbus-en13757    — (REQ_UD2; ``sequence`` parity sets FCB)
    read_now             dlms-*          ``obis`` (default 1-0:1.8.0.255), ``class_id``
                                         (3), ``attribute`` (2); HDLC: ``client``, ``ns``,
                                         ``nr``; replies match by invoke id
    any of the above     qgdw376.1       forwarded to a meter behind the concentrator:
                                         ``meter_address``, ``meter_protocol`` (default
                                         dlt645-2007), ``port`` + the inner parameters;
                                         ``proto.confirm(login_frame)`` answers login and
                                         heartbeat
    ===================  ==============  =================================================

    (DL/T 645 remote top-up and balance setting need the meter's ESAM security keys and
    are not offered; ``set_report_interval`` belongs to NB-IoT vendor protocols.)

Frame templates (:mod:`decoders.template`)
    ``load_template(path)`` / ``load_link_template(path)`` validate and compile a YAML
    template once; see CONTRIBUTING.md "How to add a protocol / a frame template".

Report templates (:mod:`decoders.reports`)
    ``apply_report(frame, timezone=tz)`` → :class:`ReportResult` with canonical
    :class:`ReadingDraft` s (registers and units of :mod:`schemas.registers`;
    ``draft.to_reading(meter_id=…, received_at=…)`` gives a ``schemas.messages.Reading``)
    and :class:`EventDraft` s (``to_event`` gives a ``DeviceEvent``).
"""

from decoders.errors import (
    ChecksumError,
    CommandNotSupportedError,
    DecodeError,
    EncodeError,
    FieldValueError,
    FramingError,
    LengthError,
    TemplateError,
    TrailingBytesError,
    UnknownProtocolError,
)
from decoders.frame import NEED_DATA, DataItem, Frame, NeedData
from decoders.framing import Envelope, Framer, FramerOverflowError, FramerStats, FrameSpec
from decoders.link import LinkTemplate, load_link_template
from decoders.protocol import CommandFrame, CommandOutcome, Protocol
from decoders.registry import get_protocol, protocol_names, protocol_registry
from decoders.reports import (
    EventDraft,
    ReadingDraft,
    ReportResult,
    ReportTemplate,
    apply_report,
    load_report,
)
from decoders.template.protocol import TemplateProtocol, load_template

__all__ = [
    "NEED_DATA",
    "ChecksumError",
    "CommandFrame",
    "CommandNotSupportedError",
    "CommandOutcome",
    "DataItem",
    "DecodeError",
    "EncodeError",
    "Envelope",
    "EventDraft",
    "FieldValueError",
    "Frame",
    "FrameSpec",
    "Framer",
    "FramerOverflowError",
    "FramerStats",
    "FramingError",
    "LengthError",
    "LinkTemplate",
    "NeedData",
    "Protocol",
    "ReadingDraft",
    "ReportResult",
    "ReportTemplate",
    "TemplateError",
    "TemplateProtocol",
    "TrailingBytesError",
    "UnknownProtocolError",
    "apply_report",
    "get_protocol",
    "load_link_template",
    "load_report",
    "load_template",
    "protocol_names",
    "protocol_registry",
]
