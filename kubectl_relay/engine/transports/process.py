"""SKELETON: replaced by the transport work."""

from __future__ import annotations

from ..addresses import Address
from .base import Listener, OpenContext, Stream



async def spawn(address: Address, ctx: OpenContext) -> Stream:
    raise NotImplementedError(address.keyword)
