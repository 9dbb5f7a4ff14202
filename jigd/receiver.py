"""A slot's hub receiver, resolved: what the hub's SMP receiver takes where `mcumgr_params`
does not say, from its Device Model's `[[hub_models]]`, else its slot, else the defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from drivers.hub_link import (
    DEFAULT_BUF_COUNT,
    DEFAULT_BUF_SIZE,
    DEFAULT_RESET_DELAY_S,
    FrameLimits,
    LinkOptions,
)
from jigd.config import HubModelConfig, SlotConfig

__all__ = ["DEFAULT_LINE_BUFFERS", "HubReceiverSettings", "receiver_settings"]

# Safe for Zephyr's UART transport: CONFIG_UART_MCUMGR_RX_BUF_COUNT's default. (Zephyr 3.4's
# CONFIG_MCUMGR_TRANSPORT_UART_MTU does not limit what it receives: buf_size does.)
DEFAULT_LINE_BUFFERS: Final = 2


@dataclass(frozen=True, slots=True)
class HubReceiverSettings:
    """A slot's hub receiver settings, resolved: Device Model over slot over defaults."""

    buf_size: int
    buf_count: int
    limits: FrameLimits
    reset_delay_s: float

    def link_options(self, *, timeout_s: float, request_retries: int) -> LinkOptions:
        """The options of a link to such a hub."""
        return LinkOptions(
            timeout_s=timeout_s,
            request_retries=request_retries,
            buf_size=self.buf_size,
            buf_count=self.buf_count,
            limits=self.limits,
        )


def receiver_settings(slot: SlotConfig, model: HubModelConfig | None) -> HubReceiverSettings:
    """Resolve the receiver settings of `slot` for a hub of `model` (its `[[hub_models]]`)."""
    sources = [source for source in (model, slot) if source is not None]

    def pick(name: str, default: Any) -> Any:
        return next((v for s in sources if (v := getattr(s, name)) is not None), default)

    return HubReceiverSettings(
        buf_size=pick("buf_size", DEFAULT_BUF_SIZE),
        buf_count=pick("buf_count", DEFAULT_BUF_COUNT),
        limits=FrameLimits(
            line_buffers=pick("line_buffers", DEFAULT_LINE_BUFFERS), mtu=pick("mtu", None)
        ),
        reset_delay_s=pick("reset_delay_s", DEFAULT_RESET_DELAY_S),
    )
