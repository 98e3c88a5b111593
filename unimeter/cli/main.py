"""Entry point of the ``unimeter`` CLI: lazy subcommand discovery and one error handler.

Every failure that unimeter raises on purpose (:class:`~schemas.errors.UnimeterError`) is
printed as one line saying what went wrong, where, and what to do next, with exit status 1;
a configuration error exits with 2. Tracebacks are for bugs only (``UNIMETER_DEBUG=1`` shows
them for every error).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import pkgutil
import sys
from typing import Any

import click

from schemas.errors import ConfigurationError, UnimeterError
from unimeter import __version__
from unimeter.cli import commands as _commands_pkg

__all__ = ["cli", "main"]


def _command_modules() -> dict[str, str]:
    names = {}
    for info in pkgutil.iter_modules(_commands_pkg.__path__):
        if info.name.startswith("_"):
            continue
        names[info.name.rstrip("_").replace("_", "-")] = f"{_commands_pkg.__name__}.{info.name}"
    return names


class LazyGroup(click.Group):
    """A group whose subcommands are the modules of ``unimeter.cli.commands``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_command_modules())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = _command_modules().get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(module_name)
        command = getattr(module, "command", None)
        if not isinstance(command, click.Command):
            raise click.ClickException(f"{module_name} defines no click command 'command'")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Read each module's docstring instead of importing it: help stays fast.
        rows = []
        for name, module_name in sorted(_command_modules().items()):
            spec = importlib.util.find_spec(module_name)
            doc = ""
            if spec is not None and spec.origin:
                with open(spec.origin, encoding="utf-8") as fh:
                    doc = ast.get_docstring(ast.parse(fh.read())) or ""
            first = doc.strip().splitlines()[0] if doc.strip() else ""
            # "``unimeter x y``: what it does" -> "what it does"
            rows.append((name, first.split(": ", 1)[-1].rstrip(".")))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"],
                                              "max_content_width": 100})
@click.version_option(__version__, prog_name="unimeter")
def cli() -> None:
    """unimeter — open meter-data collection, validation and billing.

    Start local services with `unimeter services up`, create the schema with `unimeter migrate`
    and the topics with `unimeter topics create`; `unimeter demo` runs the whole pipeline.
    """


def main(argv: list[str] | None = None) -> Any:
    debug = os.environ.get("UNIMETER_DEBUG") == "1"
    try:
        result = cli.main(args=argv, prog_name="unimeter", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigurationError as exc:
        if debug:
            raise
        click.secho(f"configuration error: {exc}", fg="red", err=True)
        sys.exit(2)
    except UnimeterError as exc:
        if debug:
            raise
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    # In non-standalone mode click returns the exit status a command asked for.
    if isinstance(result, int) and result:
        sys.exit(result)
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
