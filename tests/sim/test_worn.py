"""A worn slot (sim/worn.py): each hub put in it loses more of its frames, whole, from a seed."""

from __future__ import annotations

import pytest

from sim.worn import SPARED_FRAMES, WEAR_MAX_RATE, WEAR_PER_HUB, Wear, WornPort

FRAMES = 2000


class _Recorder:
    """A port that keeps the frames written to it."""

    path = "recorder"

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self._frame = bytearray()

    async def read(self, max_bytes: int = 4096) -> bytes:
        raise AssertionError("these tests only write: the hub's frames on their way out")

    async def write(self, data: bytes) -> None:
        self._frame += data

    def frame_end(self) -> None:
        self.frames.append(bytes(self._frame))
        self._frame.clear()


async def _send(port: WornPort, count: int) -> None:
    """`count` frames of three pieces each, numbered so a half-lost frame would show."""
    for n in range(count):
        for piece in range(3):
            await port.write(bytes([n % 256, piece]))
        port.frame_end()


def test_wear_rises_with_every_hub_to_its_cap() -> None:
    wear = Wear(seed=1)
    rates = []
    for _ in range(6):
        wear.inserted()
        rates.append(wear.frame_error_rate)
    assert rates[0] == 0.0  # the first hub sees a good contact
    assert rates[1:3] == pytest.approx([WEAR_PER_HUB, 2 * WEAR_PER_HUB])
    assert rates[-1] == WEAR_MAX_RATE
    assert rates == sorted(rates)


@pytest.mark.parametrize("hubs", [1, 2, 3, 8])
async def test_worn_port_loses_whole_frames_at_the_wear_rate(hubs: int) -> None:
    wear = Wear(seed=7)
    for _ in range(hubs):
        wear.inserted()
    recorder = _Recorder()
    await _send(WornPort(recorder, wear), SPARED_FRAMES + FRAMES)
    assert all(recorder.frames[:SPARED_FRAMES])  # the first frames after an insertion arrive
    kept = [f for f in recorder.frames[SPARED_FRAMES:] if f]
    assert all(len(f) == 6 for f in kept)  # a frame arrives whole or not at all
    lost = 1 - len(kept) / FRAMES
    rate = wear.frame_error_rate
    assert lost == pytest.approx(rate, abs=4 * (rate * (1 - rate) / FRAMES) ** 0.5 + 1e-9)


async def test_the_same_seed_loses_the_same_frames() -> None:
    runs = []
    for _ in range(2):
        wear = Wear(seed=3)
        wear.inserted()
        wear.inserted()
        recorder = _Recorder()
        await _send(WornPort(recorder, wear), SPARED_FRAMES + 200)
        runs.append(recorder.frames[SPARED_FRAMES:])
    assert runs[0] == runs[1]
    assert 0 < sum(1 for f in runs[0] if not f) < 200
