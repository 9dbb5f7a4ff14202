"""The workflow defects of issue 14 (items 1, 8 and 9) as a new user meets them: jigctl and the
daemon's control API on its real Unix socket (the `daemon` fixture of conftest.py)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jigd.ctl import main as jigctl
from jigd.station import Station

GUIDS = [f"00-DB-00-00-00-00-01-{n:02X}" for n in range(48)]
MANIFEST = "guid\r\n" + "".join(f"{g}\r\n" for g in GUIDS)


async def ctl(station: Station, *args: str) -> int:
    """jigctl in a thread (it runs its own event loop), with `--socket` after the command."""
    socket_path = str(station.config.control_socket)
    return await asyncio.to_thread(jigctl, [*args, "--socket", socket_path])


async def post(daemon: Station, body: bytes, headers: dict[str, str] | None = None) -> Any:
    """POST /v1/batches with raw bytes; the status and the parsed JSON answer."""
    connector = aiohttp.UnixConnector(path=str(daemon.config.control_socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://jigd/v1/batches", data=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


# --- item 1: a manifest that is not UTF-8 -------------------------------------------------------


async def test_a_windows_1252_manifest_is_named_by_line_and_column_without_the_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"guid\r\n00-DB-12-34-56-78-90-A0 \xa3\r\n")
    nowhere = tmp_path / "none.toml"  # no daemon to find: the check comes first, jigctl's own
    code = await asyncio.to_thread(
        jigctl,
        ["batch", "import", str(path), "--booking", "W", "--party", "P", "--config", str(nowhere)],
    )
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {path}: line 2: not UTF-8 (byte 0xA3 at column 25); save the file as CSV UTF-8\n"
    )


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
async def test_a_utf16_excel_export_is_recognised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], encoding: str
) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes("guid\r\n00-DB-12-34-56-78-90-A0\r\n".encode(encoding))  # BOM or not
    code = await asyncio.to_thread(
        jigctl, ["batch", "import", str(path), "--booking", "W", "--party", "P", "--socket", "/x"]
    )
    assert code == 2
    assert capsys.readouterr().err == f"error: {path}: UTF-16 text; save as CSV UTF-8\n"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            b'{"manifest": "guid\\n00-DB-12-34-56-78-90-A0 \\udca3\\n", "source": "m.csv", '
            b'"booking": "W", "party": "P"}',
            "not UTF-8 text: manifest",
        ),
        (
            b'{"manifest": "guid\\n", "source": "m\\ud800.csv", "booking": "W\\udfff", '
            b'"party": "P"}',
            "not UTF-8 text: source, booking",
        ),
        (b'{"manifest": "\\x41", "source": "m.csv", "booking": "W", "party": "P"}', None),
        (b'{"manifest": "guid\xa3", "source": "m.csv"}', None),
        (b'{"manifest": "", "source": "m.csv", "booking": "W", "party": "P", "again": 1}', None),
    ],
    ids=["lone-surrogate", "surrogates-in-names", "bad-escape", "raw-byte", "again-not-bool"],
)
async def test_the_daemon_answers_400_naming_the_field_never_500(
    daemon: Station, body: bytes, error: str | None
) -> None:
    status, answer = await post(daemon, body)
    assert status == 400, answer  # was HTTP 500: UnicodeEncodeError in jigd/control.py
    assert isinstance(answer["error"], str)
    if error is not None:
        assert answer["error"] == error
    assert await daemon.store.list_batches() == []


async def test_a_charset_the_daemon_does_not_know_is_bad_input(daemon: Station) -> None:
    body = json.dumps({"manifest": MANIFEST, "source": "m.csv", "booking": "W", "party": "P"})
    status, _ = await post(
        daemon, body.encode(), {"Content-Type": "application/json; charset=x-unknown"}
    )
    assert status in (201, 400)


async def test_a_body_that_does_not_decompress_is_bad_input(daemon: Station) -> None:
    reader, writer = await asyncio.open_unix_connection(str(daemon.config.control_socket))
    writer.write(
        b"POST /v1/batches HTTP/1.1\r\nHost: jigd\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: 5\r\nConnection: close\r\n\r\nabcde"
    )
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:40]  # was 500
    assert (
        b'"error": "the request body cannot be read: its Content-Encoding does not decode"'
        in answer
    )


async def test_an_answer_that_is_not_json_is_one_line_naming_the_http_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Something on the socket that answers HTML (a daemon's crash page, a wrong service)."""
    path = tmp_path / "other.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 26\r\nConnection: close\r\n\r\n500 Internal Server Error\n"
            )

    served = asyncio.create_task(asyncio.to_thread(answer))
    code = await asyncio.to_thread(jigctl, ["--socket", str(path), "batch", "list"])
    await served
    server.close()
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert "HTTP 500" in err
    assert "GET /v1/batches" in err


# --- item 8: empty manifest, a manifest imported twice, a closed booking --------------------------


async def test_an_empty_manifest_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"")
    code = await asyncio.to_thread(
        jigctl, ["batch", "import", str(path), "--booking", "W", "--party", "P", "--socket", "/x"]
    )
    assert code == 2
    assert capsys.readouterr().err == f"error: {path}: the manifest is empty\n"


async def test_the_daemon_names_an_empty_manifest_body_by_its_file(daemon: Station) -> None:
    body = {"manifest": "", "source": "m.csv", "booking": "W", "party": "P"}
    status, answer = await post(daemon, json.dumps(body).encode())
    assert status == 400
    assert answer["error"] == "m.csv: the manifest was not imported"  # was "missing or empty"
    assert answer["problems"][0].startswith("m.csv:1: (file): the file is empty")


async def test_reimporting_an_open_manifest_is_one_summary_line(
    daemon: Station, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.csv"
    path.write_text(MANIFEST, encoding="utf-8")
    assert await ctl(daemon, "batch", "import", str(path), "--booking", "W1", "--party", "P") == 0
    batch = capsys.readouterr().out.strip()
    assert await ctl(daemon, "batch", "import", str(path), "--booking", "W2", "--party", "P") == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {path}: all 48 GUIDs are already in open batch {batch}; nothing was imported\n"
    )
    some = tmp_path / "some.csv"
    some.write_text("guid\n" + "\n".join([*GUIDS[:5], "00-DB-00-00-00-00-02-01"]), encoding="utf-8")
    assert await ctl(daemon, "batch", "import", str(some), "--booking", "W3", "--party", "P") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"error: {some}: 5 of 6 GUIDs are already in open batch {batch} (" in err
    assert f"{GUIDS[0]}, {GUIDS[1]}, {GUIDS[2]}, ...)" in err
    assert GUIDS[3] not in err


async def test_a_closed_booking_is_not_imported_again_unless_asked(
    daemon: Station, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.csv"
    path.write_text(MANIFEST, encoding="utf-8")
    imp = ("batch", "import", str(path), "--booking", "WO-7", "--party", "P")
    assert await ctl(daemon, *imp) == 0
    first = capsys.readouterr().out.strip()
    assert await ctl(daemon, "batch", "close", first) == 0
    capsys.readouterr()
    assert await ctl(daemon, *imp) == 2  # was a silent new batch: the work order twice
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"booking WO-7 was already imported as batch {first} from {path} (the same GUIDs)" in err
    assert "--again" in err
    assert len(await daemon.store.list_batches()) == 1
    other = tmp_path / "other.csv"
    other.write_text("guid\n00-DB-00-00-00-00-03-01\n", encoding="utf-8")
    assert (
        await ctl(daemon, "batch", "import", str(other), "--booking", "WO-7", "--party", "P") == 2
    )
    assert "(0 of these 1 GUIDs)" in capsys.readouterr().err
    assert await ctl(daemon, *imp, "--again") == 0
    second = capsys.readouterr().out.strip()
    assert second != first
    assert [b.batch_id for b in await daemon.store.list_batches()] == [first, second]


# --- item 9: jigctl for a new user ---------------------------------------------------------------


def test_no_config_says_how_to_point_jigctl_at_the_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JIGD_SOCKET", raising=False)
    missing = tmp_path / "jigd.toml"
    assert jigctl(["batch", "list", "--config", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"error: {missing}: cannot read the file: No such file or directory; point jigctl at "
        "the daemon with --config FILE, --socket PATH or $JIGD_SOCKET\n"
    )


async def test_config_and_socket_go_before_or_after_the_command(
    daemon: Station, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "jigd.toml"
    config.write_text(daemon.config.to_toml(), encoding="utf-8")
    socket_path = str(daemon.config.control_socket)
    for args in (
        ["batch", "list", "--config", str(config)],  # was refused: "unrecognized arguments"
        ["--config", str(config), "batch", "list"],
        ["status", "--socket", socket_path],
        ["--socket", "/nowhere", "status", "--socket", socket_path],  # the later one wins
    ):
        assert await asyncio.to_thread(jigctl, args) == 0, args
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        jigctl(["--socket", socket_path, "status", "--config", str(config)])
    assert caught.value.code == 2
    assert "give --socket or --config, not both" in capsys.readouterr().err


def test_a_daemon_not_running_is_named_without_aiohttp_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "control.sock"
    assert jigctl(["status", "--socket", str(path)]) == 1
    assert capsys.readouterr().err == (
        f"error: cannot reach jigd at {path}: No such file or directory; is jigd running? "
        "(systemctl status jigd)\n"
    )  # was "Cannot connect to host jigd:80 ssl:default [...]"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any socket")
def test_a_socket_jigctl_may_not_use_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        path.chmod(0)
        assert jigctl(["status", "--socket", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach jigd at {path}: Permission denied; ")
    assert "group" in err


async def test_batch_show_is_text_with_the_reports_names_and_json_on_request(
    daemon: Station, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.csv"
    path.write_text(MANIFEST, encoding="utf-8")
    assert await ctl(daemon, "batch", "import", str(path), "--booking", "WO-9", "--party", "P") == 0
    batch = capsys.readouterr().out.strip()
    assert await ctl(daemon, "batch", "close", batch) == 0
    capsys.readouterr()
    assert await ctl(daemon, "batch", "show", batch) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[:4] == [
        f"batch      {batch}  (closed)",
        "booking    WO-9",
        "party      P",
        f"manifest   {path}",
    ]
    assert lines[4].startswith("created    20")
    assert lines[4].endswith("Z")
    assert lines[5].startswith("closed     20")
    assert lines[5].endswith("Z")
    assert lines[6] == "expected   48   received 0   pending 0"
    assert "not_received:    48" in lines
    assert "+00:00" not in out
    assert '"source"' not in out
    assert await ctl(daemon, "batch", "show", batch, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["batch"] == batch
    assert data["source"] == str(path)  # the control API's own JSON, unchanged
    assert data["counts"]["not_received"] == 48
