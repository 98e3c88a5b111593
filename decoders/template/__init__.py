"""Frame templates: the YAML format, its elements and layouts, and template protocols."""
