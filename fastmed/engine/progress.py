"""Progress bars for long loops (tqdm), quiet when asked or when not on a terminal."""
from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm import tqdm  # not tqdm.auto: its asyncio class calls iter() once more, starting a DataLoader's workers twice

from fastmed.engine import distributed

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, enabled: bool = True, **kw) -> Iterable[T]:
    """Wrap ``iterable`` in a progress bar.

    Bars go to stderr and are disabled when ``enabled`` is False, when
    ``FASTMED_PROGRESS=0`` (CI and tests set it) and on torchrun ranks other than 0.
    """
    disable = not enabled or os.environ.get("FASTMED_PROGRESS", "1") == "0" or not distributed.is_main()
    return tqdm(iterable, desc=desc, total=total, disable=disable, file=sys.stderr, leave=False, dynamic_ncols=True, **kw)
