"""Networking pieces shared by the gateway and the simulator."""

from .sender import BoundedSender

__all__ = ["BoundedSender"]
