"""One bot process per SQLite file: a second one is told who serves it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from storage import DatabaseInUseError, lock_path, serving_alone

HOLD = (
    "import sys, time\n"
    "from storage import serving_alone\n"
    "with serving_alone(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(120)\n"
)


def test_a_second_holder_of_a_sqlite_file_is_refused_and_told_the_first_ones_pid(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'intake.db'}"
    same = f"sqlite:///{tmp_path / 'data' / 'intake.db'}"
    with serving_alone(url):
        with pytest.raises(DatabaseInUseError) as refused, serving_alone(same):
            pytest.fail("two holders at once")
        assert refused.value.pid == os.getpid()
        assert refused.value.lock == (tmp_path / "data" / "intake.db.lock").resolve()
        with serving_alone(f"sqlite:///{tmp_path / 'other.db'}"):  # another file: free
            pass
    with serving_alone(url):  # given back on leaving
        pass


def test_a_killed_holder_leaves_the_file_free(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'intake.db'}"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DatabaseInUseError) as refused, serving_alone(url):
            pytest.fail("held by the other process")
        assert refused.value.pid == holder.pid
        assert refused.value.role == "bot"
        assert f"process {holder.pid} (bot) holds" in str(refused.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=20)
    with serving_alone(url):  # the system gave the lock back with the process
        pass


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        "sqlite://",
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite:///file:mem?mode=memory&cache=shared&uri=true",
        "sqlite+aiosqlite:///file::memory:?cache=shared&uri=true",
    ],
)
def test_databases_that_are_not_a_sqlite_file_are_not_held(url: str) -> None:
    assert lock_path(url) is None
    with serving_alone(url), serving_alone(url):
        pass


def test_a_sqlite_uri_file_is_held_by_its_path(tmp_path: Path) -> None:
    path = tmp_path / "intake.db"
    assert lock_path(f"sqlite:///file:{path}?uri=true") == tmp_path / "intake.db.lock"


def test_a_file_reached_through_a_link_or_a_relative_path_is_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "intake.db").touch()
    (tmp_path / "link.db").symlink_to(tmp_path / "data" / "intake.db")
    monkeypatch.chdir(tmp_path)
    with serving_alone(f"sqlite:///{tmp_path / 'data' / 'intake.db'}"):
        for other in (
            "sqlite:///data/intake.db",
            "sqlite:///link.db",
            "sqlite:///./data/../link.db",
        ):
            with pytest.raises(DatabaseInUseError), serving_alone(other):
                pytest.fail(f"{other} is the same file")


def test_a_command_is_waited_for_and_a_bot_is_not(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'intake.db'}"
    given_back = threading.Event()

    def command() -> None:
        with serving_alone(url, role="intake-bot requests redeliver"):
            holding.set()
            given_back.wait(30)

    holding = threading.Event()
    worker = threading.Thread(target=command)
    worker.start()
    try:
        assert holding.wait(30)
        with pytest.raises(DatabaseInUseError) as refused, serving_alone(url):
            pytest.fail("not without patience")
        assert refused.value.role == "intake-bot requests redeliver"
        threading.Timer(0.3, given_back.set).start()
        with serving_alone(url, patient=30):  # taken once the command gives it back
            assert given_back.is_set()
    finally:
        given_back.set()
        worker.join(30)
    with (
        serving_alone(url),
        pytest.raises(DatabaseInUseError) as refused,
        serving_alone(url, patient=30),
    ):
        pytest.fail("a bot is not waited for")
    assert refused.value.role == "bot"


@pytest.mark.parametrize("written", ["SQLite:///{}", " sqlite:///{} ", "sqlite+aiosqlite:///{}"])
def test_any_spelling_of_the_url_that_the_engine_takes_is_held(
    tmp_path: Path, written: str
) -> None:
    path = tmp_path / "intake.db"
    assert lock_path(written.format(path)) == path.resolve().with_name("intake.db.lock")
