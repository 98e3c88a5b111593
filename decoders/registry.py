"""The protocol registry: every protocol by name, built in or from a third-party package.

Strategy: one registry, filled from the protocols themselves (psycopg's adapters-registry
habit): the built-in templates are the ``decoders/protocols/*.yaml`` files (a meter
template's file name is its protocol name; link templates are found the same way), the
built-in Python protocols are listed once in :data:`BUILTIN_MODULES`, and third-party
packages add theirs through the ``unimeter.protocols`` entry-point group. Everything is
loaded lazily on first use and compiled once; ``get_protocol("cjt188-2004:di-low-first")``
returns the protocol bound to a vendor variant.

An entry point may name

- a :class:`~decoders.protocol.Protocol` instance or subclass (instantiated without
  arguments),
- a callable returning a Protocol or an iterable of Protocols,
- a :class:`pathlib.Path` (or a callable returning one) of a template file or a folder of
  ``*.yaml`` templates.
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from decoders.errors import TemplateError, UnknownProtocolError
from decoders.link import LinkTemplate, load_link_template
from decoders.protocol import Protocol
from decoders.template.protocol import TemplateProtocol, load_template

__all__ = [
    "BUILTIN_MODULES",
    "ENTRY_POINT_GROUP",
    "TEMPLATE_DIR",
    "ProtocolRegistry",
    "get_protocol",
    "protocol_names",
    "protocol_registry",
]

ENTRY_POINT_GROUP = "unimeter.protocols"
TEMPLATE_DIR = Path(__file__).parent / "protocols"

#: Built-in protocols written in Python: registry name -> "module:attribute".
BUILTIN_MODULES: dict[str, str] = {
    "modbus-rtu": "decoders.modbus:ModbusRtu",
    "modbus-tcp": "decoders.modbus:ModbusTcp",
    "mbus-en13757": "decoders.mbus:MBus",
    "qgdw376.1": "decoders.qgdw3761:QGDW3761",
    "dlms-hdlc": "decoders.dlms:DlmsHdlc",
    "dlms-wrapper": "decoders.dlms:DlmsWrapper",
    "dlms-apdu": "decoders.dlms:DlmsApdu",
    "nbiot-json": "decoders.json_meter:JsonMeter",
}

#: Short names people type.
ALIASES = {"cjt188": "cjt188-2004", "dlt645": "dlt645-2007"}


def _load_file(path: Path) -> Protocol:
    head = path.read_text(encoding="utf-8")
    if "\nkind: link" in head:
        return load_link_template(path)
    return load_template(path)


class ProtocolRegistry:
    """Protocols by name (see the module docstring). Thread-safe lazy loading."""

    def __init__(self, *, builtins: bool = True, plugins: bool = True) -> None:
        self._factories: dict[str, Callable[[], Protocol]] = {}
        self._loaded: dict[str, Protocol] = {}
        self._origin: dict[str, str] = {}
        self._lock = threading.RLock()
        self._plugins_pending = plugins
        if builtins:
            for path in sorted(TEMPLATE_DIR.glob("*.yaml")):
                self._add(path.stem, functools.partial(_load_file, path),
                          f"template {path.name}")
            for name, target in BUILTIN_MODULES.items():
                self._add(name, functools.partial(_import, target), f"module {target}")

    def _add(self, name: str, factory: Callable[[], Protocol], origin: str,
             replace: bool = False) -> None:
        if name in self._factories and not replace:
            raise ValueError(f"protocol {name!r} is already registered ({self._origin[name]}); "
                             "pass replace=True to override it")
        self._factories[name] = factory
        self._origin[name] = origin
        self._loaded.pop(name, None)

    # ----------------------------------------------------------------- adding
    def register(self, protocol: Protocol | Callable[[], Protocol], *, name: str | None = None,
                 replace: bool = False) -> None:
        """Add a protocol (an instance, or a factory called on first use)."""
        with self._lock:
            if isinstance(protocol, Protocol):
                self._add(name or protocol.name, lambda: protocol, "registered instance",
                          replace)
                self._loaded[name or protocol.name] = protocol
            else:
                if name is None:
                    raise ValueError("registering a factory needs its protocol name")
                self._add(name, protocol, "registered factory", replace)

    def register_template(self, path: Path | str, *, replace: bool = False) -> Protocol:
        """Load a template file now (errors surface here) and register it."""
        proto = _load_file(Path(path))
        with self._lock:
            self._add(proto.name, lambda: proto, f"template {path}", replace)
            self._loaded[proto.name] = proto
        return proto

    def _load_plugins(self) -> None:
        if not self._plugins_pending:
            return
        self._plugins_pending = False
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                target = ep.load()
            except Exception as exc:
                raise TemplateError(f"entry point {ep.name} = {ep.value} failed to load: "
                                    f"{exc}", file=f"entry point {ep.value}") from exc
            for proto in _expand(target, ep.value):
                self._add(proto.name, functools.partial(_same, proto),
                          f"entry point {ep.value}", replace=False)
                self._loaded[proto.name] = proto

    # ----------------------------------------------------------------- lookup
    def names(self) -> list[str]:
        with self._lock:
            self._load_plugins()
            return sorted(self._factories)

    def origin(self, name: str) -> str:
        return self._origin[ALIASES.get(name, name)]

    def get(self, name: str) -> Protocol:
        """The protocol ``name`` or ``name:variant``; raises UnknownProtocolError."""
        base, _, variant = name.partition(":")
        base = ALIASES.get(base, base)
        with self._lock:
            proto = self._loaded.get(base)
            if proto is None:
                self._load_plugins()
                factory = self._factories.get(base)
                if factory is None:
                    raise UnknownProtocolError(
                        f"unknown protocol {base!r}", where="decoders.registry",
                        hint=f"known: {', '.join(sorted(self._factories))}; third-party "
                             f"protocols register through the '{ENTRY_POINT_GROUP}' "
                             "entry-point group")
                proto = factory()
                self._loaded[base] = proto
        return proto.with_variant(variant) if variant else proto

    def templates(self) -> dict[str, Protocol]:
        """Every loaded-or-loadable template protocol (forces loading)."""
        return {n: p for n in self.names()
                if isinstance(p := self.get(n), TemplateProtocol | LinkTemplate)}


def _same(proto: Protocol) -> Protocol:
    return proto


def _import(target: str) -> Protocol:
    module_name, _, attribute = target.partition(":")
    obj = getattr(importlib.import_module(module_name), attribute)
    protos = list(_expand(obj, target))
    if len(protos) != 1:
        raise TemplateError(f"{target} gives {len(protos)} protocols, expected one",
                            file=target)
    return protos[0]


def _expand(target: Any, origin: str) -> Iterable[Protocol]:
    if isinstance(target, type) and issubclass(target, Protocol):
        target = target()
    if isinstance(target, Protocol):
        return [target]
    if isinstance(target, str | Path):
        path = Path(target)
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        return [_load_file(f) for f in files]
    if callable(target):
        return _expand(target(), origin)
    if isinstance(target, Iterable):
        return [p for t in target for p in _expand(t, origin)]
    raise TemplateError(f"entry point {origin} gives {type(target).__name__}, expected a "
                        "Protocol, a factory or a template path", file=origin)


#: The process-wide registry.
protocol_registry = ProtocolRegistry()


def get_protocol(name: str) -> Protocol:
    """``protocol_registry.get(name)``: a protocol by ``name`` or ``name:variant``."""
    return protocol_registry.get(name)


def protocol_names() -> list[str]:
    return protocol_registry.names()
