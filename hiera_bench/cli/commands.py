"""Imports every command module so that each registers itself on the app."""

from importlib import import_module

for _name in ("sweep", "models", "report", "compare", "check", "inspect", "export", "demo"):
    try:
        import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__package__}.{_name}":
            raise
