"""All configuration in one place, read from the environment and ``.env``, failing fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from storage import DEFAULT_DATABASE_URL

__all__ = ["Settings"]


class Settings(BaseSettings):
    """The bot's settings; build one in the CLI (never at import time)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    #: SQLAlchemy URL; SQLite file by default, ``postgresql://user@host/db`` in production.
    database_url: str = DEFAULT_DATABASE_URL
    #: Database connections each bot process keeps open, and how many more it may open for a
    #: burst (PostgreSQL: several processes must stay under the server's max_connections).
    database_pool_size: int = Field(default=15, ge=1)
    database_pool_overflow: int = Field(default=5, ge=0)
    #: A flow YAML file to run instead of the shipped intake flow.
    flow_file: Path | None = None
    #: The language for clients whose Telegram language is neither Russian nor English.
    default_language: Literal["ru", "en"] = "ru"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    #: The token from @BotFather; no default: ``intake-bot run`` refuses to start without it.
    telegram_token: SecretStr | None = None
    #: Self-hosted Bot API server (default: Telegram's own).
    telegram_base_url: str = "https://api.telegram.org/bot"
    telegram_base_file_url: str = "https://api.telegram.org/file/bot"
    #: Public HTTPS URL of the webhook; empty means long polling.
    webhook_url: str | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(default=8443, ge=1, le=65535)
    #: Required with WEBHOOK_URL; Telegram sends it back on every request.
    webhook_secret: SecretStr | None = None
    #: Keep within Telegram's limits (30 messages a second, 20 a minute into one group) before
    #: sending; off only for a self-hosted test server.
    rate_limit: bool = True

    #: The staff group where request cards are posted (a negative id such as -1001234567890).
    staff_chat_id: int | None = None
    #: Telegram user ids of phone staff and of admins (comma-separated).
    staff_user_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    admin_user_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    #: Language of cards and replies in the staff group.
    staff_language: Literal["ru", "en"] = "ru"
    #: A request still new after this many minutes (within opening hours) is announced again.
    reannounce_after_minutes: int = Field(default=30, ge=1)
    #: The center's time zone and opening hours (whole hours, local time).
    center_timezone: str = "Europe/Moscow"
    opening_hour: int = Field(default=9, ge=0, le=23)
    closing_hour: int = Field(default=21, ge=1, le=24)
    #: The center's phone number, shown wherever a flow text says {phone}.
    center_phone: str = "+7 (495) 085-15-13"
    #: How often the bot re-delivers failed cards and looks for overdue requests.
    housekeeping_seconds: int = Field(default=60, ge=1)
    #: After "No answer", also tell the client (in their language) that the center tried to call.
    tell_client_no_answer: bool = False
    #: Days after a request is closed before its personal data are erased (a daily job).
    retention_days: int = Field(default=180, ge=1)

    @field_validator("staff_user_ids", "admin_user_ids", mode="before")
    @classmethod
    def _id_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(part) for part in value.replace(";", ",").split(",") if part.strip()]
        if isinstance(value, int):
            return [value]
        return value

    @field_validator("center_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use e.g. Europe/Moscow)") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The center's time zone."""
        return ZoneInfo(self.center_timezone)

    @property
    def flow_values(self) -> dict[str, str]:
        """What flow texts' ``{phone}``, ``{hours}`` and ``{retention_days}`` become."""
        return {
            "phone": self.center_phone,
            "hours": f"{self.opening_hour}:00–{self.closing_hour}:00",
            "retention_days": str(self.retention_days),
        }

    @field_validator("telegram_token", "webhook_secret")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            raw = value.get_secret_value().strip()
            if not raw:
                return None
            if raw.lower() in {"changeme", "change-me", "token", "your-token-here", "xxx"}:
                raise ValueError("is still a placeholder: put the real value in .env")
        return value

    @field_validator("webhook_url", "flow_file", "staff_chat_id", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value
