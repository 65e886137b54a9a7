"""The version of segue (a leaf module: anything may import it without importing the package facade)."""

__version__ = "0.1.0"
