"""Task logging: datatrove's per-task loggers, made quiet on the terminal and complete in the files.

Owns what a task prints. datatrove logs every task at INFO to stderr and resets to a DEBUG
stderr handler when a task ends, so a run of many tasks floods the terminal. Here the full log
of each task goes to ``logs/task_NNNNN.log``, and stderr only gets warnings (INFO with ``-v``,
i.e. ``MATHCORPUS_VERBOSE=1``); tracebacks stay in the file unless ``--debug`` asks for them.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _stderr_level() -> str:
    return "INFO" if os.environ.get("MATHCORPUS_VERBOSE") == "1" else "WARNING"


def _stderr_filter(record: Any) -> bool:
    """Tracebacks stay in the task log file; the CLI prints the one-line error (``--debug``: all)."""
    if os.environ.get("MATHCORPUS_VERBOSE") == "1" or os.environ.get("MATHCORPUS_DEBUG") == "1":
        return True
    return record["exception"] is None


def quiet_task_logs() -> None:
    """Keep the task's log file handler and put a WARNING-level stderr handler back.

    datatrove logs every task at INFO to stderr; we keep stderr for progress and warnings
    (``-v`` restores INFO). The full log still goes to the task log file.
    """
    from loguru import logger

    handlers = getattr(logger._core, "handlers", {})  # type: ignore[attr-defined]
    for hid, h in list(handlers.items()):
        if "task_" not in str(getattr(h, "_name", "")):
            logger.remove(hid)
    logger.add(sys.stderr, level=_stderr_level(), format="{level}: {message}", filter=_stderr_filter)


def install_quiet_task_logger() -> None:
    """Replace datatrove's per-task logger setup/teardown with quieter equivalents.

    datatrove's versions add an INFO stderr handler at task start and reset to a DEBUG
    stderr handler at task end, so every task floods the terminal. Ours log the same lines
    in full to ``logs/task_NNNNN.log`` and only warnings (or INFO with ``-v``) to stderr.
    """
    import datatrove.executor.base as base
    from loguru import logger

    if getattr(base.add_task_logger, "_mathcorpus", False):
        return

    def add_task_logger(logging_dir: Any, rank: int, local_rank: int = 0, node_rank: int = -1) -> Any:
        logger.remove()
        logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
        prefix = f"[NODE {node_rank}] " if node_rank != -1 else ""
        logger.add(sys.stderr, level=_stderr_level() if local_rank == 0 else "ERROR",
                   format=prefix + "{level}: {message}", filter=_stderr_filter)
        # catch=False: a log file that cannot be written (disk full) must fail the task
        # with that error, not print loguru's own traceback and carry on.
        logger.add(logfile, level="DEBUG", colorize=False, catch=False,
                   format=prefix + "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}")
        logger.info(f"Launching pipeline for {rank=}")
        return logfile

    def close_task_logger(logfile: Any) -> None:
        logger.complete()
        logger.remove()
        logger.add(sys.stderr, level=_stderr_level(), format="{level}: {message}", filter=_stderr_filter)
        logfile.close()

    add_task_logger._mathcorpus = True  # type: ignore[attr-defined]
    base.add_task_logger = add_task_logger
    base.close_task_logger = close_task_logger
