"""The schema of a frame template (``format: unimeter-frame-template/1``), as pydantic models.

Strategy: YAML is parsed, template parameters (``$name``) are substituted for the chosen
vendor variant, and the result is validated by these models with ``extra="forbid"`` — a
misspelt key is an error, not a silent default. Cross-references (a body naming an element,
an element naming a table, a command naming an identifier) are checked by the compiler,
which reports them with the same file/path form. The format is documented for users in
CONTRIBUTING.md; the field docs below are the reference.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "BitFieldSpec",
    "BodySpec",
    "ChecksumModel",
    "CommandSpec",
    "CommandValue",
    "ControlSpec",
    "ElementSpec",
    "ElementType",
    "EnvelopeSpec",
    "FrameTemplate",
    "IdentifierParam",
    "LengthModel",
    "LinkPacketSpec",
    "PreambleSpec",
]

ElementType = Literal[
    "uint", "int", "bcd", "bcd_string", "hex", "bytes", "ascii", "const", "enum",
    "quantity", "datetime", "bits", "flags", "list", "identifier", "control", "length",
]
Order = Literal["big", "little"]
DateTimePart = Literal["second", "minute", "hour", "day", "month", "year", "year_lo",
                       "year_hi", "weekday"]
MatchKey = Literal["address", "function", "identifier", "sequence"]
_DEFAULT_MATCHING: tuple[MatchKey, ...] = ("address", "function", "identifier")
HexText = Annotated[str, Field(pattern=r"^([0-9A-Fa-f]{2} ?)*$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BitFieldSpec(_Model):
    """Bits ``[low, high]`` (inclusive) of a ``bits`` element."""

    bits: tuple[int, int]
    values: dict[int, str] | None = None
    flag: bool = False

    @model_validator(mode="after")
    def _check(self) -> BitFieldSpec:
        low, high = self.bits
        if not 0 <= low <= high < 64:
            raise ValueError(f"bits must be [low, high] with 0 <= low <= high < 64, got "
                             f"{list(self.bits)}")
        return self


class ElementSpec(_Model):
    """One field of a layout. ``use`` copies a named definition from ``types`` or
    ``elements`` and overrides what is given here."""

    name: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*$")
    use: str | None = None
    type: ElementType | None = None
    size: int | Literal["rest"] | None = Field(None)
    order: Order | None = None
    decimals: int | None = Field(None, ge=0, le=12)
    signed: bool | None = None
    absent: int | None = Field(None, ge=0, le=255)
    unit: str | None = None
    units: str | None = None
    unit_position: Literal["after", "before"] | None = None
    values: str | dict[int, str] | None = None
    fields: dict[str, BitFieldSpec] | None = None
    bits: dict[int, str] | None = None
    parts: list[DateTimePart] | None = None
    of: ElementSpec | None = None
    count: int | None = Field(None, ge=1)
    value: HexText | None = None
    accept: list[Order] | None = None
    pad: str | None = None
    description: str = ""

    @field_validator("size")
    @classmethod
    def _positive(cls, size: int | str | None) -> int | str | None:
        if isinstance(size, int) and not 1 <= size <= 4096:
            raise ValueError("size must be 1..4096 or 'rest'")
        return size


class PreambleSpec(_Model):
    byte: int = Field(ge=0, le=255)
    max: int = Field(ge=1, le=16)
    count: int = Field(0, ge=0, le=16)  # how many we send before frames we build


class LengthModel(_Model):
    """``frame size = ((raw & mask) >> shift) + add``; offsets from the start byte."""

    offset: int = Field(ge=1)
    size: int = Field(1, ge=1, le=4)
    order: Order = "little"
    add: int = 0
    shift: int = Field(0, ge=0, le=8)
    mask: int | None = None
    repeat_at: int | None = None
    minimum: int = 0


class ChecksumModel(_Model):
    algorithm: Literal["sum8", "mbus_sum", "crc16_modbus", "crc16_x25"]
    from_: int = Field(0, alias="from")
    to: int = Field(-2)
    order: Order = "little"


class EnvelopeSpec(_Model):
    """How frames are delimited in a byte stream (see :mod:`decoders.framing`)."""

    preamble: PreambleSpec | None = None
    start: HexText
    header_size: int = Field(ge=1)
    length: LengthModel | None = None
    size: int | None = Field(None, ge=1)
    marks: dict[int, HexText] = Field(default_factory=dict)
    checksum: ChecksumModel | None = None
    end: HexText = ""
    max_size: int = Field(512, ge=1, le=65536)

    @model_validator(mode="after")
    def _length_or_size(self) -> EnvelopeSpec:
        if (self.length is None) == (self.size is None):
            raise ValueError("give either 'length' (a length field) or 'size' (fixed size)")
        return self


class ControlSpec(_Model):
    """How the control byte splits into direction, abnormal flag, follow-up flag and
    function code."""

    direction_bit: int = Field(ge=0, le=7)
    abnormal_bit: int | None = Field(None, ge=0, le=7)
    follow_bit: int | None = Field(None, ge=0, le=7)
    function_mask: int = Field(ge=1, le=255)


class BodySpec(_Model):
    """The data area of one kind of frame. ``elements`` names entries of ``elements:``
    (or gives them inline); ``items`` stands for the identifier's catalog layout."""

    function: str
    direction: Literal["request", "reply", "report"]
    abnormal: bool = False
    elements: list[str | ElementSpec]


class CatalogEntry(_Model):
    """One data identifier (or a range ``LOW..HIGH``, or a pattern with ``x`` nibbles):
    its name and the layout(s) of its data, tried in order by size."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    layouts: list[list[ElementSpec]] = Field(min_length=1)
    description: str = ""


class IdentifierParam(_Model):
    """An identifier computed from a command parameter: ``base + param + offset``."""

    param: str
    base: HexText | None = None
    offset: int = 0
    minimum: int | None = None
    maximum: int | None = None
    default: Any = None


class CommandValue(_Model):
    """Where one element's value comes from: a command parameter or a constant."""

    param: str | None = None
    value: Any = None
    index: int | None = None
    default: Any = None
    as_: Literal["local_time"] | None = Field(None, alias="as")

    @model_validator(mode="after")
    def _one_source(self) -> CommandValue:
        if self.param is None and self.value is None:
            raise ValueError("give 'param' (a command parameter) or 'value' (a constant)")
        return self


class CommandSpec(_Model):
    """A unified command (``devices/`` catalog name) as one frame of this protocol."""

    function: str
    identifier: str | IdentifierParam | None = None
    values: dict[str, CommandValue] = Field(default_factory=dict)
    reply: Literal["expected", "none"] = "expected"
    address: str | None = None  # a fixed address (broadcasts)
    description: str = ""


class LinkPacketSpec(_Model):
    """A DTU link packet: registration or heartbeat, recognised by an envelope (binary
    formats), an exact byte string (``literal``) or an ASCII pattern (``pattern`` with a
    ``size`` or a ``terminator``)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["registration", "heartbeat", "logout", "ack", "other"]
    literal: HexText | None = None
    ascii_literal: str | None = None
    pattern: str | None = None
    size: int | None = Field(None, ge=1)
    max_size: int = Field(64, ge=1, le=1024)
    terminator: HexText | None = None
    envelope: EnvelopeSpec | None = None
    elements: list[ElementSpec] = Field(default_factory=list)
    device_id: str | None = None  # the element (or regex group) holding the DTU id
    reply: HexText | None = None  # what the FEP answers, if the DTU expects an answer

    @model_validator(mode="after")
    def _one_matcher(self) -> LinkPacketSpec:
        given = [k for k in ("literal", "ascii_literal", "pattern", "envelope")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of literal, ascii_literal, pattern, envelope; "
                             f"got {given or 'none'}")
        if self.pattern is not None and self.size is None and self.terminator is None:
            raise ValueError("a pattern needs a fixed 'size' or a 'terminator' so the "
                             "packet can be cut from the stream")
        return self


class FrameTemplate(_Model):
    """A whole frame template (one protocol, or one family of DTU link packets)."""

    format: Literal["unimeter-frame-template/1"]
    protocol: str = Field(pattern=r"^[a-z][a-z0-9_.\-]*$")
    title: str
    kind: Literal["meter", "link"] = "meter"
    media: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    envelope: EnvelopeSpec | None = None
    header: list[ElementSpec] = Field(default_factory=list)
    control: ControlSpec | None = None
    data_offset: int = Field(0, ge=0, le=255)
    functions: dict[int, str] = Field(default_factory=dict)
    elements: dict[str, ElementSpec] = Field(default_factory=dict)
    bodies: list[BodySpec] = Field(default_factory=list)
    tables: dict[str, dict[int, str]] = Field(default_factory=dict)
    types: dict[str, ElementSpec] = Field(default_factory=dict)
    catalog: dict[str, CatalogEntry] = Field(default_factory=dict)
    commands: dict[str, CommandSpec] = Field(default_factory=dict)
    #: Header fields of command frames (other than address, control, length).
    command_header: dict[str, CommandValue] = Field(default_factory=dict)
    matching: list[MatchKey] = Field(default_factory=lambda: list(_DEFAULT_MATCHING))
    packets: list[LinkPacketSpec] = Field(default_factory=list)
    description: str = ""

    @model_validator(mode="after")
    def _shape(self) -> FrameTemplate:
        if self.kind == "meter":
            missing = [k for k in ("envelope", "control") if getattr(self, k) is None]
            if missing or not self.header:
                missing += [] if self.header else ["header"]
                raise ValueError("a meter protocol template needs envelope, header and "
                                 f"control (missing: {missing})")
        elif not self.packets:
            raise ValueError("a link template needs at least one entry in 'packets'")
        return self
