"""Drivers, the command line and the YAML configs: they compose actors into runs."""
