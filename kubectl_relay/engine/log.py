"""socat-format log lines on stderr (or syslog, or a file).

Every line has socat's shape (socat 1.8.1 ``error.c``, ``msg2()``)::

    2026/11/24 10:00:00 relay[1234] N accepting connection from AF=2 127.0.0.1:5555 on ...
    2026/11/24 10:00:00.123456 relay[1234] W ...          (-lu: microseconds)
    2026/11/24 10:00:00 node-a relay[1234] E ...          (-lh: host name)

The letter is the level: D(ebug) I(nfo) N(otice) W(arning) E(rror) F(atal).
Modules log through ``logger`` with %-style arguments (never f-strings) so
that nothing is formatted for a level that is off::

    from .log import NOTICE, logger
    logger.log(NOTICE, "accepting connection from %s on %s", peer, local)
    logger.error('unknown device/address "%s"', keyword)

``configure`` installs the handlers; it may be called any number of times and
each call replaces the previous setup. ``reset`` undoes it (for tests).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar

from .errors import UsageError

#: socat's levels: D(ebug) I(nfo) N(otice) W(arning) E(rror) F(atal).
DEBUG = logging.DEBUG
INFO = logging.INFO
NOTICE = 25
WARNING = logging.WARNING
ERROR = logging.ERROR
FATAL = logging.CRITICAL

logging.addLevelName(NOTICE, "NOTICE")

#: socat's levels from the least to the most severe.
_SEVERITIES = (DEBUG, INFO, NOTICE, WARNING, ERROR, FATAL)
#: How many levels lower what the current task logs is (``children-shutup``).
_shut_up_levels: ContextVar[int] = ContextVar("shut_up_levels", default=0)
#: ``--quiet-sessions``: the current task (a session) logs no notices.
_quiet_session: ContextVar[bool] = ContextVar("quiet_session", default=False)
#: ``--quiet-accepts``: listeners log no notices per accepted peer.
_quiet_accepts = False


class _EngineLogger(logging.Logger):
    """The engine's logger: a quiet session's notices are off, before any record is made.

    A relay pod's mux session would otherwise make six or seven records (the
    caller's frame looked up, the record built) only for ``_ShutUp`` to drop them.
    """

    def isEnabledFor(self, level: int) -> bool:
        if level == NOTICE and _quiet_session.get():
            return False
        return super().isEnabledFor(level)


_default_class = logging.getLoggerClass()
logging.setLoggerClass(_EngineLogger)
logger = logging.getLogger("kubectl_relay.engine")
logging.setLoggerClass(_default_class)


def quiet_session() -> None:
    """``--quiet-sessions``: the current task (a session) logs no notices from here on.

    Its warnings and errors are logged as before; the listener's notices
    (``listening on``, ``accepting connection from``) are not the session's.
    """
    _quiet_session.set(True)


def quiet_accepts(quiet: bool) -> None:
    """``--quiet-accepts``: a listener says ``listening on`` once, nothing per accepted peer.

    A relay pod's client that does not show the relay's accepts needs no line
    per connection, and each line crosses the container runtime, the kubelet
    and the API server to reach it.
    """
    global _quiet_accepts
    _quiet_accepts = quiet


def peer_notices() -> bool:
    """Whether a listener logs ``accepting connection from`` (and ``listening on`` again) per peer.

    ``-d -d`` without ``--quiet-accepts``.
    """
    return not _quiet_accepts and logger.isEnabledFor(NOTICE)


def shut_up(levels: int) -> None:
    """``children-shutup``: log what the current task (a forked session) logs ``levels`` lower.

    socat.1: "Decreases the severity of log messages produced by child
    processes. For example, with value 1 notices are logged as info (or
    dropped depending on option -dX), and errors are logged as warnings but
    still cause termination of the child process." Sessions are tasks here,
    so the setting lives in the task's context and reaches what it starts.
    """
    _shut_up_levels.set(max(levels, 0))


class _ShutUp(logging.Filter):
    """Lowers records logged under ``shut_up``; drops those that fall below the level.

    Also drops the notices of a session under ``quiet_session``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if levels := _shut_up_levels.get():
            rank = sum(1 for severity in _SEVERITIES[1:] if record.levelno >= severity)
            if rank < levels:
                return False  # below debug (socat: "level -= shutup", then below every -d)
            record.levelno = _SEVERITIES[rank - levels]
            record.levelname = logging.getLevelName(record.levelno)
            if record.levelno < logger.getEffectiveLevel():
                return False
        # Lowered first: a quiet session's error lowered to a notice goes too.
        return record.levelno != NOTICE or not _quiet_session.get()


logger.addFilter(_ShutUp())

#: socat builds each line in a 512-byte buffer and cuts what does not fit
#: (``#define MSGLEN 512`` in error.c); the newline comes after the cut.
MSGLEN = 512

#: Where syslog lines go when ``-ly`` is given (glibc's ``syslog()`` uses it too).
SYSLOG_SOCKET = "/dev/log"

#: ``-ly[facility]`` names, as socat's ``facilitynames`` table in error.c on Linux
#: (its "console" and "security" exist only where syslog.h defines them: BSDs),
#: with syslog.h's numbers (those of ``logging.handlers.SysLogHandler.LOG_*``,
#: which is imported only when ``-ly`` is given: it costs start-up time).
SYSLOG_FACILITIES: dict[str, int] = {
    "auth": 4,
    "authpriv": 10,
    "cron": 9,
    "daemon": 3,
    "ftp": 11,
    "kern": 0,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
    "lpr": 6,
    "mail": 2,
    "news": 7,
    "syslog": 5,
    "user": 1,
    "uucp": 8,
}

#: socat's syslog priorities per level (error.c ``syslevel[]``: fatal is LOG_CRIT).
_SYSLOG_PRIORITIES = {
    "DEBUG": "debug",
    "INFO": "info",
    "NOTICE": "notice",
    "WARNING": "warning",
    "ERROR": "error",
    "CRITICAL": "critical",
}

#: The socat level letter of our levels; other numbers fall to the level below.
_LETTERS = {DEBUG: "D", INFO: "I", NOTICE: "N", WARNING: "W", ERROR: "E", FATAL: "F"}
_THRESHOLDS = sorted(_LETTERS.items(), reverse=True)

#: A clock in nanoseconds since the epoch (injectable for golden tests).
Clock = Callable[[], int]

_progname = "relay"


def level_letter(levelno: int) -> str:
    """socat's one-letter level for a ``logging`` level number (``NOTICE`` -> ``"N"``)."""
    letter = _LETTERS.get(levelno)
    if letter is not None:
        return letter
    for threshold, letter in _THRESHOLDS:
        if levelno >= threshold:
            return letter
    return "D"


def level_from_d_count(count: int) -> int:
    """The log level after ``count`` ``-d`` options (``-d -d`` and ``-dd`` both count 2).

    socat 1.8 shows warnings by default (CHANGES 1.8.0.0: "Now warning
    messages are printed by default"). Its socat.c counts the ``-d`` options
    and sets the level to ``4 - count`` on the scale debug=0 .. error=4 (the
    scale ``-d0`` = errors and ``-d4`` = debug use), so one ``-d`` still means
    warnings, ``-d -d`` notices, three info, four debug: the meaning they had
    in 1.7, where only the default (errors) was different. The man page's
    "applying this option also prints notice messages" for a single ``-d``
    disagrees with that code and with its own "-d -d ... Prints fatal, error,
    warning, and notice messages"; we follow the code.
    """
    if count <= 1:
        return WARNING
    return (NOTICE, INFO, DEBUG)[min(count, 4) - 2]


def level_from_d_number(number: int) -> int:
    """The log level for ``-d<number>`` (socat 1.8: ``-d0`` .. ``-d4``).

    Man page: "-d0: With this option, only fatal and error messages are
    printed; this restores the behaviour of socat() up to version 1.7.4", and
    "-d4" is "equivalent to -dddd". Unlike ``level_from_d_count(0)`` (no
    ``-d`` at all: warnings), ``-d0`` means errors only. Numbers below 0 leave
    only fatal messages; above 4, everything.
    """
    if number <= 0:
        return ERROR if number == 0 else FATAL
    return level_from_d_count(number)


def current_progname() -> str:
    """The program name set by the last ``configure`` (``$PROGNAME`` in ``-r``/``-R`` names)."""
    return _progname


def variable_prefix() -> str:
    """The prefix of the environment variables socat sets: ``SOCAT_``, or the -lp name's.

    socat names them after its program name (``SERVER0_PEERADDR`` after
    ``-lp server0``). Under its own name the relay keeps ``SOCAT_``, which
    scripts written for socat read.
    """
    return "SOCAT_" if _progname in ("relay", "socat") else _progname.upper() + "_"


def log_hostname() -> str:
    """The host name ``-lh`` adds to each line.

    Man page: "Uses the value from environment variable HOSTNAME or the value
    retrieved with uname() if HOSTNAME is not set".
    """
    name = os.environ.get("HOSTNAME")
    return os.uname().nodename if name is None else name


#: The session a task relays for, with ``--trace-session-ids`` only (``Relay`` sets it
#: in each session's task): its log lines say ``session N: ...`` and its trace
#: headers end in `` session=N``. Unset, the output is socat's, byte for byte.
SESSION_ID: ContextVar[int | None] = ContextVar("relay_session_id", default=None)


class SocatFormatter(logging.Formatter):
    """Formats a record as one socat log line (without the trailing newline).

    ``clock`` (nanoseconds since the epoch) is read when the line is formatted,
    as socat reads the time in ``msg()``; tests pass a fixed one.
    """

    def __init__(
        self,
        *,
        progname: str,
        microseconds: bool = False,
        hostname: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__()
        self.progname = progname
        self.microseconds = microseconds
        self.hostname = hostname
        self.clock: Clock = clock or time.time_ns
        self._second = -1
        self._second_text = ""

    def timestamp(self, nanoseconds: int) -> str:
        """``YYYY/MM/DD HH:MM:SS`` in local time plus ``.uuuuuu`` with ``-lu``, and a space."""
        seconds, rest = divmod(nanoseconds, 1_000_000_000)
        if seconds != self._second:
            # strftime is the costly part; lines come in bursts within one second.
            self._second_text = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(seconds))
            self._second = seconds
        if self.microseconds:
            return f"{self._second_text}.{rest // 1000:06d} "
        return self._second_text + " "

    def format(self, record: logging.LogRecord) -> str:
        """The socat line for ``record``, cut at ``MSGLEN`` characters like socat's buffer."""
        host = "" if self.hostname is None else self.hostname + " "
        pid = os.getpid() if record.process is None else record.process
        session = SESSION_ID.get()
        tag = "" if session is None else f"session {session}: "
        line = (
            f"{self.timestamp(self.clock())}{host}{self.progname}[{pid}] "
            f"{level_letter(record.levelno)} {tag}{_message(record)}"
        )
        return line[:MSGLEN]


class SyslogFormatter(logging.Formatter):
    """Formats a record for syslog: ``progname[pid]: N text``.

    socat hands syslog the part of its line after ``progname[pid] `` and lets
    ``openlog(progname, LOG_PID, ...)`` add the tag; the stdlib handler adds no
    tag, so it is part of the message here. Syslog stamps the time itself,
    which is why ``-lu`` and ``-lh`` do not apply (man page: "-lu ... Does not
    work when logging to syslog").
    """

    def __init__(self, *, progname: str) -> None:
        super().__init__()
        self.progname = progname

    def format(self, record: logging.LogRecord) -> str:
        """The syslog message for ``record``."""
        pid = os.getpid() if record.process is None else record.process
        line = f"{self.progname}[{pid}]: {level_letter(record.levelno)} {_message(record)}"
        return line[:MSGLEN]


def _message(record: logging.LogRecord) -> str:
    text = record.getMessage()
    # socat never prints tracebacks; at debug level an unexpected exception's
    # traceback is worth more than the one-line rule.
    if record.exc_info and logger.isEnabledFor(DEBUG):
        text = text + "\n" + logging.Formatter().formatException(record.exc_info)
    return text


class _StderrHandler(logging.Handler):
    """Writes lines to whatever ``sys.stderr`` is at the time of the write.

    Looking it up per line keeps redirections made after ``configure``
    (including the test runner's capture) working. socat flushes each line.
    """

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr
        if stream is None:
            return
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # a closed or broken stderr must not end the relay
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """Nowhere left to say it: drop the line (the stdlib would print a traceback)."""


class _FileHandler(logging.FileHandler):
    """``-lf``: a log file whose write failures are said once on stderr, then ignored.

    socat ignores failed log writes (``-lf /dev/full`` relays as usual); the
    stdlib handler prints a traceback per record. Here the first failure
    gives one ``E`` line on stderr and the relay goes on.
    """

    reported = False

    def handleError(self, record: logging.LogRecord) -> None:
        """Report the first failed write to the log file on stderr."""
        if self.reported:
            return
        self.reported = True
        exc = sys.exc_info()[1]
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        line = f'cannot write to log file "{self.baseFilename}": {reason}'
        record = logging.LogRecord(
            record.name, ERROR, record.pathname, record.lineno, "%s", (line,), None
        )
        fallback = _StderrHandler()
        fallback.setFormatter(self.formatter)
        fallback.handle(record)


_OUR_HANDLER = "_kubectl_relay_handler"


def configure(
    *,
    level: int,
    progname: str,
    microseconds: bool = False,
    hostname: bool = False,
    file: str | None = None,
    syslog_facility: str | None = None,
    stderr: bool = False,
    clock: Clock | None = None,
) -> None:
    """Set up ``logger`` for socat's ``-d``, ``-lp``, ``-lu``, ``-lh``, ``-lf``, ``-ly``, ``-ls``.

    ``level`` is a ``logging`` level (see ``level_from_d_count``).
    ``syslog_facility`` is the text after ``-ly`` ("" means socat's default,
    "daemon"). ``file`` appends lines to that file (``-lf``). Lines go to
    stderr when ``stderr`` is set (``-ls``) or no other destination is given;
    socat keeps only the last of ``-lf``/``-ly``/``-ls``, here the given ones
    all receive the lines. Each call replaces the previous setup; when it
    fails (``UsageError``: unknown facility, log file that cannot be opened)
    the previous setup stays.
    """
    global _progname
    handlers: list[logging.Handler] = []
    fallback_note: str | None = None
    line_formatter = SocatFormatter(
        progname=progname,
        microseconds=microseconds,
        hostname=log_hostname() if hostname else None,
        clock=clock,
    )
    if syslog_facility is not None:
        handler = _open_syslog(syslog_facility or "daemon")
        if handler is None:
            fallback_note = f'syslog socket "{SYSLOG_SOCKET}" is not available, logging to stderr'
        else:
            handler.setFormatter(SyslogFormatter(progname=progname))
            handlers.append(handler)
    if file is not None:
        try:
            file_handler = _FileHandler(file, mode="a", encoding="utf-8")
        except OSError as exc:
            _close_all(handlers)
            # socat error.c: Error2("cannot open log file \"%s\": %s", arg, strerror(errno))
            raise UsageError(f'cannot open log file "{file}": {exc.strerror}') from exc
        file_handler.setFormatter(line_formatter)
        handlers.append(file_handler)
    if stderr or not handlers or fallback_note is not None:
        stderr_handler = _StderrHandler()
        stderr_handler.setFormatter(line_formatter)
        handlers.append(stderr_handler)

    reset()
    for handler in handlers:
        setattr(handler, _OUR_HANDLER, True)
        logger.addHandler(handler)
    logger.setLevel(level)
    # The engine's lines are the process's output; the root logger must not print them again.
    logger.propagate = False
    _progname = progname
    if fallback_note is not None:
        logger.warning("%s", fallback_note)


def reset() -> None:
    """Remove and close the handlers ``configure`` installed; let records propagate again."""
    global _progname, _quiet_accepts
    for handler in list(logger.handlers):
        if getattr(handler, _OUR_HANDLER, False):
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    _progname = "relay"
    _quiet_accepts = False


def _open_syslog(facility_name: str) -> logging.Handler | None:
    """A syslog handler on ``/dev/log``, or None when there is no syslog socket."""
    facility = SYSLOG_FACILITIES.get(facility_name.lower())
    if facility is None:
        # socat error.c: Error1("unknown syslog facility \"%s\"", arg)
        raise UsageError(f'unknown syslog facility "{facility_name}"')
    if not os.path.exists(SYSLOG_SOCKET):
        return None
    import logging.handlers  # noqa: PLC0415 - only -ly needs it (and pickle, which it imports)

    class SyslogHandler(logging.handlers.SysLogHandler):
        """The stdlib syslog handler with socat's NOTICE priority (not warning)."""

        def mapPriority(self, levelName: str) -> str:
            """socat's syslog priority for a level name."""
            return _SYSLOG_PRIORITIES.get(levelName, "warning")

    try:
        return SyslogHandler(address=SYSLOG_SOCKET, facility=facility)
    except OSError:
        return None


def _close_all(handlers: list[logging.Handler]) -> None:
    for handler in handlers:
        handler.close()
