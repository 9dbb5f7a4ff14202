"""drivers/untrusted.py: text from outside shown escaped, capped and never as a formula."""

from __future__ import annotations

import csv
import io
import logging
import sys

import pytest

from drivers.errors import RigCommandFailed, SmpError
from drivers.untrusted import (
    FIELD_LIMIT,
    MESSAGE_LIMIT,
    PrintableFormatter,
    csv_cell,
    printable,
)

FORGED = "boom\n2099-01-01 00:00:00 ERROR jigd.slot: forged"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (FORGED, "boom\\n2099-01-01 00:00:00 ERROR jigd.slot: forged"),
        ("a\r\nb\tc", "a\\r\\nb\\tc"),
        ("\x1b[2J\x1b[31mred\x1b[0m", "\\x1b[2J\\x1b[31mred\\x1b[0m"),
        ("nul\x00 del\x7f c1\x85", "nul\\x00 del\\x7f c1\\x85"),
        ("\u202eevil\u202c \u2066x\u2069 \u200b", "\\u202eevil\\u202c \\u2066x\\u2069 \\u200b"),
        ("line\u2028sep", "line\\u2028sep"),
        ("bad \udcff surrogate", "bad \\udcff surrogate"),
        ("tag \U000e0041", "tag \\U000e0041"),
    ],
)
def test_control_characters_are_escaped_visibly(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(shown) == shown  # escaping twice changes nothing
    assert shown.isprintable()


@pytest.mark.parametrize(
    "text", ["", "rig1/slot3: no answer to jig identity read within 1 s", "Müller café ✓ C:\\x"]
)
def test_printable_text_is_returned_as_it_is(text: str) -> None:
    assert printable(text) is text
    assert csv_cell(text) is text


def test_long_text_is_cut_within_the_limit_with_a_marker() -> None:
    shown = printable("X" * 10_000)
    assert len(shown) <= MESSAGE_LIMIT
    assert shown.endswith("...[5936 more]")
    escaped = printable("\x00" * 10_000, FIELD_LIMIT)
    assert len(escaped) <= FIELD_LIMIT
    assert escaped.startswith("\\x00\\x00")
    assert "...[" in escaped
    assert escaped.rsplit("...[", 1)[0].endswith("\\x00")  # no escape cut in half
    assert printable(escaped, FIELD_LIMIT) == escaped


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\\t=1"),
        ("\r=1", "'\\r=1"),
        ("a=1", "a=1"),
    ],
)
def test_a_csv_cell_is_never_a_formula(text: str, cell: str) -> None:
    assert csv_cell(text) == cell
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerow([csv_cell(text), csv_cell(FORGED)])
    assert next(csv.reader(io.StringIO(buffer.getvalue(), newline=""))) == [
        cell,
        printable(FORGED),
    ]
    assert buffer.getvalue().count("\n") == 1


def test_a_hubs_words_in_a_driver_error_are_escaped_and_capped() -> None:
    reason = FORGED + "\x1b[31m" + "X" * 10_000
    error = SmpError("rig1/slot1", what="image upload", request_group=1, request_command=1,
                     rc=1, error_name="EUNKNOWN", reason=reason)  # fmt: skip
    assert error.reason is not None
    assert len(error.reason) <= FIELD_LIMIT
    assert str(error).startswith(
        "rig1/slot1: hub answered image upload with error EUNKNOWN (1): boom\\n2099-01-01"
    )
    assert str(error).isprintable()
    rig = RigCommandFailed("rig1", "PING", "\x1b[2Jgone\nEVT INSERT 3")
    assert str(rig) == "rig1: rig controller refused 'PING': \\x1b[2Jgone\\nEVT INSERT 3"


def _fail(message: str) -> None:
    raise ValueError(message)


def test_a_log_record_is_one_printable_line_whatever_its_text() -> None:
    formatter = PrintableFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord(
        "jigd.slot", logging.ERROR, __file__, 1, "%s: %s", ("rig1/slot1", FORGED + "\u202e"), None
    )
    assert formatter.format(record) == (
        "ERROR jigd.slot: rig1/slot1: boom\\n2099-01-01 00:00:00 ERROR jigd.slot: forged\\u202e"
    )
    try:
        _fail("bad\x1b[31m value")
    except ValueError:
        record.exc_info = sys.exc_info()
    text = formatter.format(record)
    assert "\x1b" not in text
    assert "ValueError: bad\\x1b[31m value" in text
    assert text.splitlines()[1] == "Traceback (most recent call last):"
