"""The ``modelyard`` command, run in-process through ``main(argv)`` against a live server.

Every test captures stdout and stderr with ``capsys``; ``--output json`` answers are parsed
with ``json.loads``. Exit codes are the contract: usage 2, auth 3, not found 4, conflict 5,
server or unreachable 1.
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.api import create_app
from modelyard.cli.main import main
from modelyard.config import Settings
from modelyard.errors import ExitCode
from tests.conftest import LiveServer, Platform

SECRET_VALUE = "hunter2-Sup3r-S3cret-Value-9f8e7d"
FILE_SECRET_VALUE = "file-borne-S3cret-Value-c0ffee"


@dataclass
class Result:
    """One run of the command: its exit code and everything it printed."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def text(self) -> str:
        return self.out + self.err


@dataclass
class Cli:
    """Runs ``modelyard`` in-process and keeps a transcript of every run."""

    capsys: pytest.CaptureFixture[str]
    transcript: list[Result] = field(default_factory=list)

    def __call__(self, *args: str) -> Result:
        self.capsys.readouterr()  # drop anything printed before this run
        code = main(list(args))
        captured = self.capsys.readouterr()
        result = Result(code=code, out=captured.out, err=captured.err)
        self.transcript.append(result)
        return result

    def ok(self, *args: str) -> Result:
        """Run and insist on success, showing the output when it fails."""
        result = self(*args)
        assert result.code == ExitCode.OK, f"modelyard {' '.join(args)}:\n{result.text}"
        return result

    def json(self, *args: str) -> Any:
        return self.ok(*args, "--output", "json").json()

    def everything_printed(self) -> str:
        return "".join(result.text for result in self.transcript)


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich reads COLUMNS on every print; a wide console keeps table cells on one line."""
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


@pytest.fixture
def admin_cli(cli: Cli, platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The command, pointed at the live server as its superuser."""
    monkeypatch.setenv("MODELYARD_URL", platform.url)
    monkeypatch.setenv("MODELYARD_TOKEN", platform.admin_token)
    return cli


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _credentials_file() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "modelyard" / "credentials.json"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _names(page: dict[str, Any], key: str = "name") -> list[str]:
    return [item[key] for item in page["items"]]


# -- projects ----------------------------------------------------------------------------


@pytest.mark.integration
def test_project_lifecycle(admin_cli: Cli) -> None:
    created = admin_cli.json(
        "projects", "create", "credit-risk", "--description", "PD models", "-l", "team=risk"
    )
    assert created["name"] == "credit-risk"
    assert created["description"] == "PD models"
    assert created["labels"] == {"team": "risk"}
    assert created["created_by"] == "admin"
    assert created["version"] == 1

    admin_cli.ok("projects", "create", "fraud")
    assert _names(admin_cli.json("projects", "list")) == ["credit-risk", "fraud"]
    table = admin_cli.ok("projects", "list").out
    assert "credit-risk" in table
    assert "fraud" in table

    shown = admin_cli.ok("projects", "show", "credit-risk").out
    assert "PD models" in shown
    assert "team=risk" in shown
    assert admin_cli.json("projects", "show", "credit-risk")["id"] == created["id"]

    updated = admin_cli.json(
        "projects", "update", "credit-risk", "--description", "PD and LGD", "--if-version", "1"
    )
    assert updated["description"] == "PD and LGD"
    assert updated["labels"] == {"team": "risk"}
    assert updated["version"] == 2
    stale = admin_cli("projects", "update", "credit-risk", "-l", "x=y", "--if-version", "1")
    assert stale.code == ExitCode.CONFLICT
    assert "version" in stale.err

    deleted = admin_cli.json("projects", "delete", "fraud", "--yes")
    assert deleted == {"message": "deleted project fraud", "project": "fraud"}
    assert (
        "deleted project credit-risk"
        in admin_cli.ok("projects", "delete", "credit-risk", "--yes").out
    )
    assert admin_cli.json("projects", "list")["items"] == []
    assert admin_cli("projects", "show", "fraud").code == ExitCode.NOT_FOUND


# -- members -----------------------------------------------------------------------------


@pytest.mark.integration
def test_member_lifecycle(admin_cli: Cli) -> None:
    admin_cli.ok("projects", "create", "credit-risk")
    admin_cli.ok("users", "create", "alice")

    added = admin_cli.json("members", "add", "alice", "-p", "credit-risk", "--role", "editor")
    assert added["user"] == "alice"
    assert added["role"] == "editor"
    assert admin_cli("members", "add", "alice", "-p", "credit-risk").code == ExitCode.CONFLICT

    changed = admin_cli.json("members", "set", "alice", "-p", "credit-risk", "--role", "viewer")
    assert changed["role"] == "viewer"
    assert changed["version"] == added["version"] + 1

    members = admin_cli.json("members", "list", "-p", "credit-risk")
    assert {m["user"]: m["role"] for m in members["items"]} == {
        "admin": "admin",
        "alice": "viewer",
    }
    table = admin_cli.ok("members", "list", "--project", "credit-risk").out
    assert "alice" in table
    assert "viewer" in table

    removed = admin_cli.json("members", "remove", "alice", "-p", "credit-risk")
    assert removed["user"] == "alice"
    assert _names(admin_cli.json("members", "list", "-p", "credit-risk"), "user") == ["admin"]
    missing = admin_cli("members", "remove", "alice", "-p", "credit-risk")
    assert missing.code == ExitCode.NOT_FOUND
    assert "not a member" in missing.err

    # The last admin stays.
    last = admin_cli("members", "set", "admin", "-p", "credit-risk", "--role", "viewer")
    assert last.code == ExitCode.CONFLICT
    assert admin_cli("members", "add", "nobody", "-p", "credit-risk").code == ExitCode.NOT_FOUND


@pytest.mark.integration
def test_a_viewer_cannot_manage_members(
    admin_cli: Cli, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin_cli.ok("projects", "create", "credit-risk")
    viewer = platform.user("vera")
    admin_cli.ok("members", "add", "vera", "-p", "credit-risk", "--role", "viewer")

    monkeypatch.setenv("MODELYARD_TOKEN", viewer)
    assert _names(admin_cli.json("members", "list", "-p", "credit-risk"), "user") == [
        "admin",
        "vera",
    ]
    denied = admin_cli("members", "set", "vera", "-p", "credit-risk", "--role", "admin")
    assert denied.code == ExitCode.AUTH
    assert "admin role" in denied.err


# -- users -------------------------------------------------------------------------------


@pytest.mark.integration
def test_users_create_list_show(
    admin_cli: Cli, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = admin_cli.json(
        "users", "create", "bob", "--display-name", "Bob Builder", "--email", "bob@example.com"
    )
    assert created["name"] == "bob"
    assert created["display_name"] == "Bob Builder"
    assert created["email"] == "bob@example.com"
    assert created["is_superuser"] is False
    assert "root2" in admin_cli.ok("users", "create", "root2", "--superuser").out

    listed = admin_cli.json("users", "list")
    assert {"admin", "bob", "root2"} <= set(_names(listed))
    assert "bob@example.com" in admin_cli.ok("users", "list").out

    shown = admin_cli.json("users", "show", "bob")
    assert shown["id"] == created["id"]
    assert "Bob Builder" in admin_cli.ok("users", "show", "bob").out
    assert admin_cli.json("users", "show", "root2")["is_superuser"] is True

    assert admin_cli("users", "show", "nobody").code == ExitCode.NOT_FOUND
    assert admin_cli("users", "create", "bob").code == ExitCode.CONFLICT

    monkeypatch.setenv("MODELYARD_TOKEN", platform.user("carol"))
    assert admin_cli("users", "list").code == ExitCode.AUTH
    assert admin_cli("users", "create", "mallory").code == ExitCode.AUTH


# -- tokens ------------------------------------------------------------------------------


@pytest.mark.integration
def test_token_is_printed_once_and_works(admin_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    result = admin_cli.ok("tokens", "create", "laptop", "--expires-in-days", "7")
    lines = result.out.splitlines()
    announce = lines.index("token (shown once, store it now):")
    token = lines[announce + 1].strip()
    assert token.startswith("myd_")
    assert result.out.count(token) == 1

    as_json = admin_cli.json("tokens", "create", "ci", "--expires-in-days", "0")
    assert as_json["name"] == "ci"
    assert as_json["expires_at"] is None
    assert as_json["token"].startswith("myd_")

    monkeypatch.setenv("MODELYARD_TOKEN", token)
    me = admin_cli.json("whoami")
    assert me["name"] == "admin"
    assert me["via"] == "token"


@pytest.mark.integration
def test_token_list_never_shows_values_and_revoke_locks_out(
    admin_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = admin_cli.json("tokens", "create", "ci")
    token = created["token"]

    listed = admin_cli.json("tokens", "list")
    by_name = {item["name"]: item for item in listed["items"]}
    assert by_name["ci"]["id"] == created["id"]
    assert all("token" not in item for item in listed["items"])
    assert token.startswith(by_name["ci"]["prefix"])
    table = admin_cli.ok("tokens", "list")
    assert created["id"] in table.out
    for run in admin_cli.transcript[1:]:
        assert token not in run.text

    monkeypatch.setenv("MODELYARD_TOKEN", token)
    assert admin_cli.json("whoami")["name"] == "admin"

    revoked = admin_cli.json("tokens", "revoke", created["id"])
    assert revoked["id"] == created["id"]

    locked_out = admin_cli("whoami")
    assert locked_out.code == ExitCode.AUTH
    assert "revoked" in locked_out.err
    assert admin_cli("tokens", "list").code == ExitCode.AUTH


@pytest.mark.integration
def test_revoking_an_unknown_token_is_not_found(admin_cli: Cli) -> None:
    assert admin_cli("tokens", "revoke", "no-such-token").code == ExitCode.NOT_FOUND


# -- secrets -----------------------------------------------------------------------------


@pytest.mark.integration
def test_secrets_go_in_and_never_come_out(
    admin_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin_cli.ok("projects", "create", "credit-risk")

    monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET_VALUE))
    created = admin_cli.json(
        "secrets", "set", "DB_PASSWORD", "-p", "credit-risk", "--stdin", "--description", "db"
    )
    assert created["name"] == "DB_PASSWORD"
    assert created["version"] == 1
    assert "value" not in created

    value_file = tmp_path / "api-key.txt"
    value_file.write_text(FILE_SECRET_VALUE)
    table = admin_cli.ok(
        "secrets", "set", "API_KEY", "-p", "credit-risk", "--from-file", str(value_file)
    )
    assert "API_KEY" in table.out

    monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET_VALUE + "-rotated"))
    replaced = admin_cli.json(
        "secrets", "set", "DB_PASSWORD", "-p", "credit-risk", "--stdin", "--if-version", "1"
    )
    assert replaced["version"] == 2
    monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET_VALUE))
    stale = admin_cli(
        "secrets", "set", "DB_PASSWORD", "-p", "credit-risk", "--stdin", "--if-version", "1"
    )
    assert stale.code == ExitCode.CONFLICT

    listed = admin_cli.json("secrets", "list", "-p", "credit-risk")
    assert sorted(_names(listed)) == ["API_KEY", "DB_PASSWORD"]
    assert all("value" not in item and "ciphertext" not in item for item in listed["items"])
    assert "DB_PASSWORD" in admin_cli.ok("secrets", "list", "-p", "credit-risk").out

    monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET_VALUE))
    missing = admin_cli("secrets", "set", "DB_PASSWORD", "-p", "nope", "--stdin")
    assert missing.code == ExitCode.NOT_FOUND
    monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET_VALUE))
    bad_name = admin_cli("secrets", "set", "1-bad name", "-p", "credit-risk", "--stdin")
    assert bad_name.code == ExitCode.USAGE

    admin_cli.ok("audit", "list")
    admin_cli.ok("audit", "list", "-o", "json")

    printed = admin_cli.everything_printed()
    assert "DB_PASSWORD" in printed
    assert SECRET_VALUE not in printed
    assert FILE_SECRET_VALUE not in printed


@pytest.mark.integration
def test_an_oversized_secret_is_refused_without_echoing_it(admin_cli: Cli, tmp_path: Path) -> None:
    admin_cli.ok("projects", "create", "credit-risk")
    value_file = tmp_path / "huge.txt"
    # Passwords often hold brackets; rich then stops swallowing pydantic's input_value.
    start = "Zq9-PRIVATE-START"
    value_file.write_text(start + "[" + "x" * 70_000)

    refused = admin_cli(
        "secrets", "set", "HUGE", "-p", "credit-risk", "--from-file", str(value_file)
    )

    assert refused.code == ExitCode.USAGE
    assert start not in refused.text


# -- audit and whoami -------------------------------------------------------------------


@pytest.mark.integration
def test_audit_list_shows_the_actions(admin_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    admin_cli.ok("projects", "create", "credit-risk")
    admin_cli.ok("users", "create", "alice")
    admin_cli.ok("members", "add", "alice", "-p", "credit-risk", "--role", "editor")
    admin_cli.ok("members", "set", "alice", "-p", "credit-risk", "--role", "viewer")
    monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET_VALUE))
    admin_cli.ok("secrets", "set", "DB_PASSWORD", "-p", "credit-risk", "--stdin")
    token_id = admin_cli.json("tokens", "create", "ci")["id"]
    admin_cli.ok("tokens", "revoke", token_id)
    admin_cli.ok("projects", "update", "credit-risk", "--description", "changed")

    events = admin_cli.json("audit", "list")
    actions = [event["action"] for event in events["items"]]
    assert actions == [
        "project.update",
        "token.revoke",
        "token.create",
        "secret.create",
        "member.update",
        "member.add",
        "user.create",
        "project.create",
    ]
    assert {event["actor"] for event in events["items"]} == {"admin"}
    assert {event["outcome"] for event in events["items"]} == {"success"}
    secret_event = events["items"][actions.index("secret.create")]
    assert secret_event["resource_name"] == "DB_PASSWORD"
    assert secret_event["project"] == "credit-risk"

    scoped = admin_cli.json("audit", "list", "-p", "credit-risk")
    assert {event["project"] for event in scoped["items"]} == {"credit-risk"}
    assert "member.add" in [event["action"] for event in scoped["items"]]

    first = admin_cli.json("audit", "list", "--limit", "3")
    assert len(first["items"]) == 3
    assert first["next_cursor"]
    rest = admin_cli.json("audit", "list", "--cursor", first["next_cursor"])
    assert [e["action"] for e in first["items"] + rest["items"]] == actions

    assert "secret.create" in admin_cli.ok("audit", "list").out
    assert SECRET_VALUE not in admin_cli.everything_printed()


@pytest.mark.integration
def test_whoami(admin_cli: Cli, platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    me = admin_cli.json("whoami")
    assert me == {"name": "admin", "is_superuser": True, "via": "token", "projects": {}}
    table = admin_cli.ok("whoami").out
    assert "admin" in table
    assert "is_superuser" in table

    admin_cli.ok("projects", "create", "credit-risk")
    platform.user("dave")
    admin_cli.ok("members", "add", "dave", "-p", "credit-risk", "--role", "editor")
    assert admin_cli.json("whoami")["projects"] == {"credit-risk": "admin"}


# -- exit codes --------------------------------------------------------------------------


def test_an_unknown_option_is_a_usage_error(cli: Cli) -> None:
    assert cli("projects", "list", "--no-such-option").code == ExitCode.USAGE


def test_brackets_in_input_do_not_crash_the_error_report(cli: Cli) -> None:
    result = cli("members", "add", "a[/b]", "-p", "credit-risk")
    assert result.code == ExitCode.USAGE
    # The message is printed as text, not rich markup: the pattern's brackets survive.
    assert "user: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$'" in result.err


@pytest.mark.integration
def test_a_bad_token_is_an_auth_error(
    cli: Cli, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELYARD_URL", platform.url)
    monkeypatch.setenv("MODELYARD_TOKEN", "myd_this-token-was-never-issued")
    unknown = cli("whoami")
    assert unknown.code == ExitCode.AUTH
    assert "auth/invalid_token" in unknown.err

    monkeypatch.setenv("MODELYARD_TOKEN", "not-a-modelyard-token")
    assert cli("projects", "list").code == ExitCode.AUTH

    monkeypatch.delenv("MODELYARD_TOKEN")
    anonymous = cli("projects", "list")
    assert anonymous.code == ExitCode.AUTH
    assert "auth/missing_token" in anonymous.err


@pytest.mark.integration
def test_a_missing_project_is_not_found(admin_cli: Cli) -> None:
    for args in (
        ("projects", "show", "nope"),
        ("projects", "update", "nope", "--description", "x"),
        ("projects", "delete", "nope", "--yes"),
        ("members", "list", "-p", "nope"),
        ("secrets", "list", "-p", "nope"),
    ):
        result = admin_cli(*args)
        assert result.code == ExitCode.NOT_FOUND, args
        assert "project/not_found" in result.err


@pytest.mark.integration
def test_a_duplicate_project_is_a_conflict(admin_cli: Cli) -> None:
    admin_cli.ok("projects", "create", "credit-risk")
    duplicate = admin_cli("projects", "create", "credit-risk")
    assert duplicate.code == ExitCode.CONFLICT
    assert "already exists" in duplicate.err


def test_an_unreachable_server_is_a_server_error(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("MODELYARD_TOKEN", "myd_whatever")
    result = cli("projects", "list")
    assert result.code == ExitCode.SERVER_ERROR
    assert "cannot reach" in result.err


@pytest.mark.parametrize("name", ["Bad_Name", "trailing-dash-", "x" * 64])
def test_an_invalid_project_name_is_a_usage_error(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # Refused before any request: the server address does not even answer.
    monkeypatch.setenv("MODELYARD_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("MODELYARD_TOKEN", "myd_whatever")
    result = cli("projects", "create", name)
    assert result.code == ExitCode.USAGE
    assert "request/invalid" in result.err


# -- login and logout -------------------------------------------------------------------


@pytest.mark.integration
def test_login_stores_credentials_privately_and_logout_forgets_them(
    cli: Cli, platform: Platform
) -> None:
    assert "MODELYARD_TOKEN" not in os.environ
    assert "MODELYARD_URL" not in os.environ

    refused = cli("login", "--url", platform.url, "--token", "myd_wrong")
    assert refused.code == ExitCode.AUTH
    assert not _credentials_file().exists()

    logged_in = cli.ok("login", "--url", platform.url, "--token", platform.admin_token)
    assert "admin" in logged_in.out
    assert platform.admin_token not in logged_in.text

    path = _credentials_file()
    assert _mode(path) == 0o600
    assert json.loads(path.read_text()) == {"url": platform.url, "token": platform.admin_token}

    assert cli.json("whoami")["name"] == "admin"

    assert "logged out" in cli.ok("logout").out
    assert _mode(path) == 0o600
    assert json.loads(path.read_text()) == {"url": platform.url, "token": None}
    after = cli("whoami")
    assert after.code == ExitCode.AUTH
    assert "auth/missing_token" in after.err

    # Logging in again reuses the stored address.
    cli.ok("login", "--token", platform.admin_token)
    assert cli.json("whoami")["name"] == "admin"


@pytest.mark.integration
def test_login_honours_modelyard_credentials(
    cli: Cli, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere" / "creds.json"
    monkeypatch.setenv("MODELYARD_CREDENTIALS", str(elsewhere))
    cli.ok("login", "--url", platform.url, "--token", platform.admin_token)
    assert _mode(elsewhere) == 0o600
    assert not _credentials_file().exists()
    assert cli.json("whoami")["name"] == "admin"


# -- init and db -------------------------------------------------------------------------


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "fresh-home"
    monkeypatch.setenv("MODELYARD_HOME", str(home))
    return home


@pytest.mark.integration
def test_init_creates_a_private_home_and_a_working_token(
    cli: Cli, fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not fresh_home.exists()

    result = cli.ok("init")
    lines = result.out.splitlines()
    token = lines[lines.index("token (shown once, store it now):") + 1].strip()
    assert token.startswith("myd_")
    assert "superuser: admin" in result.out

    assert (fresh_home / "modelyard.db").is_file()
    key_file = fresh_home / "secret.key"
    assert _mode(key_file) == 0o600
    key = key_file.read_text()
    stored = json.loads(_credentials_file().read_text())
    assert stored["token"] == token
    assert _mode(_credentials_file()) == 0o600

    server = LiveServer(create_app(Settings()))
    server.start()
    try:
        response = httpx.get(
            f"{server.url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
        assert response.json()["name"] == "admin"
        assert response.json()["is_superuser"] is True

        monkeypatch.setenv("MODELYARD_URL", server.url)
        monkeypatch.setenv("MODELYARD_TOKEN", token)
        cli.ok("projects", "create", "credit-risk")
        monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET_VALUE))
        cli.ok("secrets", "set", "DB_PASSWORD", "-p", "credit-risk", "--stdin")
        assert _names(cli.json("secrets", "list", "-p", "credit-risk")) == ["DB_PASSWORD"]
    finally:
        server.stop()

    again = cli("init")
    assert again.code == ExitCode.CONFLICT
    assert "init/already_initialised" in again.err
    assert key_file.read_text() == key
    assert json.loads(_credentials_file().read_text())["token"] == token


def test_init_json_without_login(cli: Cli, fresh_home: Path) -> None:
    payload = cli.json("init", "--admin", "root", "--no-login")
    assert payload["message"] == "initialised"
    assert payload["superuser"] == "root"
    assert payload["home"] == str(fresh_home)
    assert payload["key_file_created"] is True
    assert payload["token"].startswith("myd_")
    assert not _credentials_file().exists()
    assert _mode(fresh_home / "secret.key") == 0o600


def test_db_commands_move_the_schema(cli: Cli, fresh_home: Path) -> None:
    upgraded = cli.ok("db", "upgrade")
    assert (fresh_home / "modelyard.db").is_file()
    revision = upgraded.out.strip().removeprefix("schema at revision ")
    assert revision
    assert revision != "None"
    assert cli.ok("db", "current").out.strip() == f"{revision} (up to date)"

    assert cli.ok("db", "upgrade").out.strip() == f"schema at revision {revision}"

    cli.ok("db", "downgrade", "--revision", "base")
    assert cli.ok("db", "current").out.strip() == "empty (outdated)"

    cli.ok("db", "upgrade", "--revision", revision)
    assert cli.ok("db", "current").out.strip() == f"{revision} (up to date)"

    # A migrated home is usable: init works on it.
    assert cli.json("init", "--no-login")["key_file_created"] is True
