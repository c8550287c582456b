"""Background threads give way to the UI thread: nicer on Linux, and Python's lock handed over sooner."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from gui.background import NICENESS, SWITCH_INTERVAL, start_background_thread


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread is Linux's")
def test_a_background_thread_is_nicer_and_the_calling_thread_keeps_its_priority():
    ui = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def work(tag: str) -> None:
        seen[tag] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    thread = start_background_thread(work, "test-background", "nice")
    thread.join(10)
    assert thread.daemon and thread.name == "test-background"
    assert seen["nice"] == min(19, ui + NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == ui
    assert sys.getswitchinterval() <= SWITCH_INTERVAL
