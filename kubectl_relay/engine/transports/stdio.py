"""SKELETON: replaced by the transport work."""

from __future__ import annotations

from ..addresses import Address
from .base import Listener, OpenContext, Stream



async def open_stdio(address: Address, ctx: OpenContext) -> Stream:
    raise NotImplementedError(address.keyword)


async def open_fd(address: Address, ctx: OpenContext) -> Stream:
    raise NotImplementedError(address.keyword)
