"""idv: identity verification and step-up authentication.

``service.create_app`` is loaded lazily so that importing the pure core (``service.domain``,
``service.factors``) never pulls in Flask or SQLAlchemy.
"""

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from service.app import create_app

        return create_app
    raise AttributeError(name)
