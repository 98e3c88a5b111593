"""``python -m unimeter`` = the ``unimeter`` command."""

from unimeter.cli.main import main

main()
