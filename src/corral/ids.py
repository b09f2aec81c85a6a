"""Run identifiers: time-ordered so new rows land at the right edge of the primary-key index."""

from __future__ import annotations

import os
import time


def new_run_id() -> str:
    # 48 bits of milliseconds then 80 random bits, shown as a UUID (the layout of UUIDv7).
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version nibble
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
