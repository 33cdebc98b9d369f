"""Consent Gateway: geo- and language-aware consent banners and durable consent records."""

__version__ = "0.1.0"
