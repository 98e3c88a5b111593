"""Built-in frame templates (``*.yaml``); the file name is the protocol name."""
