"""The package's version, in a module of its own: any layer may import it without loading the
package's API (ckpttool/__init__.py) or anything above it. pyproject.toml reads it from here."""
__version__ = "0.1.0"
