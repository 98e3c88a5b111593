"""One module per top-level subcommand; the module defines ``command`` (a click command).

The module name is the subcommand name (a trailing ``_`` is dropped, ``_`` becomes ``-``).
Modules are imported only when their subcommand runs, so ``unimeter --help`` stays fast and a
heavy dependency of one command never slows another.
"""
