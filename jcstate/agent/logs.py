"""The agent's log: the lines ``logging`` writes, without importing ``logging`` in the agent.

``logging`` (with ``traceback``, ``tokenize``'s compiled patterns, ``string`` and ``weakref``)
costs the resident agent about 1 MB, and the agent writes a few lines an hour. Its modules log
through :func:`getLogger` here, which writes exactly what ``logging`` would --
``2026-01-01 12:00:00,123 INFO jcstate.agent: message`` -- to a file that logrotate may move
away (reopened when the path names another file, so no ``copytruncate`` is needed).

``logging`` takes over as soon as a process has it: :func:`setup` in a process that already
imported it (the converge worker, tests) configures it as the agent always did, and the
command machinery and the host, which use ``logging``, call :func:`use_logging` before they
load; from then on every line, the agent's own included, goes through ``logging`` to the same
file at the same level. Without a log file, warnings and errors go to stderr, as ``logging``'s
last-resort handler writes them.

``echo``: what ``jcstate agent`` prints besides the file (the ``jcstate`` command's
``logging.basicConfig``): every line logged, as ``LEVEL name: message``, on stderr.

``--log-format json`` (``setup(..., json_lines=True)``): each line of the file is one JSON object
instead -- ``{"time": "2026-01-01T12:00:00.123Z", "level": "INFO", "logger": "jcstate.agent",
"message": "..."}`` -- for a log shipper; :func:`json_formatter` gives ``logging`` (the converge
worker, the server) the same lines. The message is the same text either way: nothing secret is
ever logged, and the format adds only the time, the level and the logger's name.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 0.4 MB)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DEBUG",
    "ERROR",
    "INFO",
    "WARNING",
    "Log",
    "getLogger",
    "json_formatter",
    "json_line",
    "line_format",
    "setup",
    "use_logging",
]

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # the log file's lines
ECHO_FORMAT = "%(levelname)s %(name)s: %(message)s"  # the jcstate command's stderr

_file: _ReopeningFile | None = None  # the log file, while this module writes it
_level = WARNING  # lines below are dropped (the effective level of the "jcstate" logger)
_echo: int | None = None  # the jcstate command's root level: lines are echoed to stderr
_json = False  # the file's lines are JSON objects (--log-format json)
_std: Any = None  # the logging module, once it has taken over
_loggers: dict[str, Log] = {}


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _moved(path: str, identity: tuple[int, int]) -> bool:
    """Whether ``path`` no longer names the file with ``identity`` (logrotate moved it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True
    return (st.st_dev, st.st_ino) != identity


class _ReopeningFile:
    """An append-only text file, reopened when the path names another file (logrotate)."""

    def __init__(self, path: str):
        self.path = path
        self._open()

    def _open(self) -> None:
        self.stream = open(self.path, "a", encoding="utf-8")  # kept open, as FileHandler does
        self._identity = _identity(self.stream.fileno())

    def write(self, line: str) -> None:
        if _moved(self.path, self._identity):
            self.close()
            self._open()
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        try:
            self.stream.close()  # flushes first
        except OSError:
            pass  # lines a full disk refused are lost; closing must not stop the agent


class Log:
    """The part of ``logging.Logger`` the agent uses."""

    def __init__(self, name: str):
        self.name = name

    def debug(self, msg: str, *args: object) -> None:
        self.log(DEBUG, msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self.log(INFO, msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self.log(WARNING, msg, *args)

    def error(self, msg: str, *args: object) -> None:
        self.log(ERROR, msg, *args)

    def log(self, level: int, msg: str, *args: object) -> None:
        if _std is None and "logging" in sys.modules:
            use_logging()  # something loaded it without saying so: it takes over from here
        if _std is not None:
            _std.getLogger(self.name).log(level, msg, *args)
            return
        if level < _level:
            return
        now = time.time()
        text = msg % args if args else msg
        if _file is None and _echo is None:  # logging's last resort: the message, on stderr
            sys.stderr.write(text + "\n")
            return
        try:
            if _file is not None:
                if _json:
                    _file.write(json_line(NAMES.get(level, f"Level {level}"), self.name, text, now))
                else:
                    _file.write(_line(FORMAT, level, self.name, text, now))
            if _echo is not None:
                sys.stderr.write(_line(ECHO_FORMAT, level, self.name, text, now) + "\n")
                sys.stderr.flush()
        except Exception as exc:  # as logging: a log that cannot be written stops nothing
            sys.stderr.write(f"--- Logging error ---\n{type(exc).__name__}: {exc}\n{text}\n")


def _line(fmt: str, level: int, name: str, message: str, created: float) -> str:
    """``fmt`` filled in as ``logging.Formatter`` does (``asctime``: local time, ms after ``,``)."""
    asctime = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
    asctime = f"{asctime},{int((created - int(created)) * 1000):03d}"
    fields = {"asctime": asctime, "levelname": NAMES.get(level, f"Level {level}")}
    return fmt % {**fields, "name": name, "message": message}


def json_line(level: str, name: str, message: str, created: float) -> str:
    """One log line as a JSON object (UTC time with milliseconds), no newline."""
    import json

    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    stamp = f"{stamp}.{int((created - int(created)) * 1000):03d}Z"
    fields = {"time": stamp, "level": level, "logger": name, "message": message}
    return json.dumps(fields, ensure_ascii=False)


def json_formatter(logging: Any) -> Any:
    """A ``logging.Formatter`` writing :func:`json_line` lines (an exception's traceback goes
    into ``"exception"``)."""
    import json

    class JsonFormatter(logging.Formatter):  # type: ignore[name-defined,misc]
        def format(self, record: Any) -> str:
            line = json_line(record.levelname, record.name, record.getMessage(), record.created)
            if record.exc_info:
                fields = json.loads(line)
                fields["exception"] = self.formatException(record.exc_info)
                line = json.dumps(fields, ensure_ascii=False)
            return line

    return JsonFormatter()


def getLogger(name: str) -> Log:
    if name not in _loggers:
        _loggers[name] = Log(name)
    return _loggers[name]


def setup(
    log_file: str | None, level: int = INFO, *, echo: int | None = None, json_lines: bool = False
) -> None:
    """Log to ``log_file`` at ``level`` (no file: warnings and errors on stderr).

    ``echo``: the level of the ``jcstate`` command's stderr (its ``logging.basicConfig``);
    lines logged are also printed there. Where ``logging`` is loaded, it is configured instead,
    as the agent always did. ``json_lines``: the file gets one JSON object per line.
    """
    global _file, _level, _echo, _json
    _echo = echo
    _json = json_lines
    if _std is None and "logging" not in sys.modules:
        if _file is not None:
            _file.close()
            _file = None
        if log_file:
            os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
            _file = _ReopeningFile(log_file)
            os.chmod(log_file, 0o640)
            _level = level
        else:  # the "jcstate" logger's level is not set: the root's counts
            _level = WARNING if echo is None else echo
        return
    use_logging()
    if log_file:
        _std_file(log_file, level)


def use_logging() -> None:
    """Hand the log over to ``logging`` (a module that uses it is about to load): the same
    file, level and stderr from now on."""
    global _std, _file
    if _std is not None:
        return
    import logging

    _std = logging
    if _echo is not None and not logging.getLogger().handlers:
        logging.basicConfig(level=_echo, format=ECHO_FORMAT, stream=sys.stderr)
    if _file is not None:
        _file.close()
        path, _file = _file.path, None
        _std_file(path, _level)


def _std_file(log_file: str, level: int) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    handler = _reopening_handler(_std, log_file)
    os.chmod(log_file, 0o640)
    handler.setFormatter(json_formatter(_std) if _json else _std.Formatter(FORMAT))
    root = _std.getLogger("jcstate")
    root.addHandler(handler)
    root.setLevel(level)


def level() -> int:
    """The level lines are logged at (what the converge worker is told)."""
    if _std is not None:
        return int(_std.getLogger("jcstate").getEffectiveLevel())
    return _level


def line_format() -> str:
    """``json`` or ``text``: how lines are written (what the converge worker is told)."""
    return "json" if _json else "text"


def flush() -> None:
    """Write out what is buffered (before the process is replaced)."""
    if _file is not None:
        try:
            _file.stream.flush()
        except OSError:
            pass  # a full disk: what it refused is lost, as logging's handlers lose it
    if _std is not None:
        for handler in _std.getLogger("jcstate").handlers:
            try:
                handler.flush()
            except OSError:
                pass


def _reopening_handler(logging: Any, path: str) -> Any:
    """``logging.FileHandler`` reopened when logrotate moves the file.

    ``logging.handlers.WatchedFileHandler`` does the same, but importing ``logging.handlers``
    (pickle, queue, struct, …) costs about 0.6 MB.
    """

    class ReopeningFileHandler(logging.FileHandler):  # type: ignore[name-defined,misc]
        def __init__(self, filename: str):
            super().__init__(filename, encoding="utf-8")
            self._identity = _identity(self.stream.fileno())

        def emit(self, record: Any) -> None:
            if self.stream is not None and _moved(self.baseFilename, self._identity):
                self.stream.flush()
                self.stream.close()
                self.stream = self._open()
                self._identity = _identity(self.stream.fileno())
            super().emit(record)

    return ReopeningFileHandler(path)
