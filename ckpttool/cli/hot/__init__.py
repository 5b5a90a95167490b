"""The bodies of the hot commands (`latest`, `inspect`, `verify`, `convert`), importable without Typer or Rich: cli/quick.py
runs their common command lines straight from argv, and cli/commands/<name>.py declares each one's
options for Typer and calls the same body, so that both paths do exactly the same work."""
