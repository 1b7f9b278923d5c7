"""Rekindle: the project package (settings, URLs, broker setup, storage keys, engines)."""
