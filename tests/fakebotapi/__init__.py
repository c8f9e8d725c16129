"""Fake Telegram Bot API server for driving the real python-telegram-bot stack in tests."""

from .server import Call, FakeBotAPI, UploadedFile

__all__ = ["Call", "FakeBotAPI", "UploadedFile"]
