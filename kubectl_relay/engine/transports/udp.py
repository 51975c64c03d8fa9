"""SKELETON: replaced by the transport work."""

from __future__ import annotations

from ..addresses import Address
from .base import Listener, OpenContext, Stream



async def connect(address: Address, ctx: OpenContext) -> Stream:
    raise NotImplementedError(address.keyword)


async def sendto(address: Address, ctx: OpenContext) -> Stream:
    raise NotImplementedError(address.keyword)


async def listen(address: Address, ctx: OpenContext) -> Listener:
    raise NotImplementedError(address.keyword)


async def recvfrom(address: Address, ctx: OpenContext) -> Listener:
    raise NotImplementedError(address.keyword)
