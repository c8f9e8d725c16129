"""Pytest fixture for FakeBotAPI; import ``fake_bot_api`` into a conftest.py to use it."""

from collections.abc import AsyncIterator

import pytest_asyncio

from .server import FakeBotAPI

TEST_TOKEN = "123456:TEST-TOKEN"


@pytest_asyncio.fixture
async def fake_bot_api() -> AsyncIterator[FakeBotAPI]:
    """A started FakeBotAPI; fails the test in teardown if any call was rejected."""
    async with FakeBotAPI(token=TEST_TOKEN) as api:
        yield api
        api.assert_no_rejections()
