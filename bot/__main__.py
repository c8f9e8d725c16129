"""Allow ``python -m bot`` as well as the ``intake-bot`` script."""

from bot.cli import main

main()
