"""Placeholder: routes are added by the owning issue."""

from flask import Flask


def register(app: Flask) -> None:
    pass
