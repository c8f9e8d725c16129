"""Persistence for the intake bot: clients, their dialogues and consultation requests.

Storage speaks plain values and knows nothing of Telegram. It owns every SQL statement; the
caller owns the transaction (see ``storage.crud``).
"""

from sqlmodel.ext.asyncio.session import AsyncSession

from storage.crud import (
    create_client,
    create_request,
    delete_client_data,
    get_client,
    get_dialogue,
    get_or_create_client,
    get_request,
    list_requests,
    save_dialogue,
    set_client_language,
    set_prompt_message_id,
)
from storage.db import (
    DEFAULT_DATABASE_URL,
    make_engine,
    make_sessionmaker,
    normalize_url,
    pending_changes,
    upgrade,
)
from storage.errors import DatabaseURLError, DuplicateClientError, MigrationError, StorageError
from storage.models import Client, ConsultationRequest, DialogueSession
from storage.sqltypes import utcnow

__all__ = [
    "DEFAULT_DATABASE_URL",
    "AsyncSession",
    "Client",
    "ConsultationRequest",
    "DatabaseURLError",
    "DialogueSession",
    "DuplicateClientError",
    "MigrationError",
    "StorageError",
    "create_client",
    "create_request",
    "delete_client_data",
    "get_client",
    "get_dialogue",
    "get_or_create_client",
    "get_request",
    "list_requests",
    "make_engine",
    "make_sessionmaker",
    "normalize_url",
    "pending_changes",
    "save_dialogue",
    "set_client_language",
    "set_prompt_message_id",
    "upgrade",
    "utcnow",
]
