"""The library version, alone in its module: setuptools reads it without importing cnnlab,
and modules anywhere in the package import it without importing the package's ``__init__``."""

__version__ = "0.1.0"
