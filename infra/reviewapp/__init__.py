"""The review web app: ``loupe review serve``. See ``app.create_app``."""

from infra.reviewapp.app import create_app, is_loopback

__all__ = ["create_app", "is_loopback"]
