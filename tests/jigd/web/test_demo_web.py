"""`jigd demo --web-port N`: the demo's station serves the view; the demo says where, and where
the token file is, never the token."""

from __future__ import annotations

from pathlib import Path

import pytest

from jigd.demo import DemoOptions, run_demo
from tests.jigd.web.station import short_dir
from tests.services import free_port


@pytest.mark.slow
async def test_the_demo_serves_the_view_and_names_the_token_file() -> None:
    with short_dir() as tmp:
        port = free_port()
        workdir = Path(tmp) / "d"
        options = DemoOptions(
            hubs=4, rigs=1, slots=2, faults="none", seed=2, workdir=workdir, web_port=port
        )
        lines: list[str] = []
        assert await run_demo(options, show=lines.append) == 0
        token_file = workdir / "web-token"
        said = [line for line in lines if f"http://127.0.0.1:{port}/" in line]
        assert len(said) == 1
        assert str(token_file.resolve()) in said[0] or str(token_file) in said[0]
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text("utf-8").strip()
        assert len(token) >= 32
        for text in (*lines, (workdir / "jigd.log").read_text("utf-8")):
            assert token not in text
        assert "web station view on http://127.0.0.1:" in (workdir / "jigd.log").read_text("utf-8")
