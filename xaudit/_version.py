"""The one place the version is stated (pyproject reads it from here)."""

__version__ = "0.1.0"
