"""The training commands' logging: timestamped lines from rank 0; other ranks warnings only."""

from __future__ import annotations

import logging
import os


def is_rank_zero() -> bool:
    """Whether this process is the launcher's rank 0 (or runs alone): the one that prints."""
    return int(os.environ.get("RANK", "0")) == 0


def configure_logging() -> None:
    """INFO on the process of rank 0 (or the only one), WARNING on the others, so a run of N
    processes logs its progress once. Read from the launcher's ``RANK`` before any process
    group exists."""
    level = logging.INFO if is_rank_zero() else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
