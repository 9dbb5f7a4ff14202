"""The simulated Communications Hub (`SimHub`), in parts a reader can take one at a time.

| module | what it holds |
|---|---|
| `sim.hub.sim_hub` | `SimHub`: power, boot-and-run sessions, resets, counters, ground truth |
| `sim.hub.wire` | `WireIO`, `Wire`, `framing_named`: bytes paced in and out, framing |
| `sim.hub.smp_server` | `SmpServer`: the OS and jig groups, dispatch; `RequestBuffers` |
| `sim.hub.image_group` | `ImageGroup`: image state read and write, upload |
| `sim.hub.smp_answers` | how requests are parsed and answers and errors encoded |
| `sim.hub.boot` | `Bootloader`: MCUboot's boot step on the hub's flash, swaps and checks |
| `sim.hub.flash` | `HubFlash`, `UploadRecord`, `SwapKind`: what survives power loss |
| `sim.faults` | `Faults` and their profiles; `FaultInjector`: when a fault strikes |

docs/simulator.md describes the behaviour; docs/hub-protocol.md the protocol it follows.
"""

from sim.hub.flash import HubFlash, SwapKind, UploadRecord
from sim.hub.image_group import IMAGE_MAGIC
from sim.hub.sim_hub import SimHub
from sim.hub.smp_server import RequestBuffers, SmpServer
from sim.hub.wire import Wire, framing_named
from sim.slot_hub import HubState

__all__ = [
    "IMAGE_MAGIC",
    "HubFlash",
    "HubState",
    "RequestBuffers",
    "SimHub",
    "SmpServer",
    "SwapKind",
    "UploadRecord",
    "Wire",
    "framing_named",
]
