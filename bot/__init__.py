"""The channels around the dialogue core: terminal chat, CLI and (soon) Telegram.

``bot`` translates input to engine inputs and engine replies to output; it holds
no clinical logic.
"""

__all__: list[str] = []
