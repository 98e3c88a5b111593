"""The ``unimeter`` command line. Each subcommand lives in its own module of ``commands/``."""
