"""Handlers by audience: ``client`` (private chats); staff and admin handlers come next."""

__all__ = ["client"]
