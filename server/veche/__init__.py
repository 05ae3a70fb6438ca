"""Veche: self-hosted video meetings (an aiohttp signalling server and aiortc SFU)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
