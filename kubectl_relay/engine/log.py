"""socat-format log lines on stderr (or syslog, or a file).

SKELETON: the names below are the contract; formatting and ``configure`` are
filled in by the logging work. Modules log through ``logger`` with %-style
arguments (never f-strings) so that nothing is formatted for a level that is
off::

    from .log import NOTICE, logger
    logger.log(NOTICE, "accepting connection from %s on %s", peer, local)
    logger.error('unknown device/address "%s"', keyword)
"""

from __future__ import annotations

import logging

#: socat's levels: D(ebug) I(nfo) N(otice) W(arning) E(rror) F(atal).
DEBUG = logging.DEBUG
INFO = logging.INFO
NOTICE = 25
WARNING = logging.WARNING
ERROR = logging.ERROR
FATAL = logging.CRITICAL

logging.addLevelName(NOTICE, "NOTICE")

logger = logging.getLogger("kubectl_relay.engine")
