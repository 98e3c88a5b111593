"""unimeter: the command line, settings, local services, process supervision and error root.

This package may import every other one; nothing imports it (DESIGN.md §2).
"""

__version__ = "0.1.0"
