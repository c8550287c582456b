"""Background threads that give way to the UI thread (no Qt).

Model work (predicting, opening, auto-detect, calibration, saliency, fine-tuning) runs on Python threads beside
the UI thread, and on a loaded machine the UI waited for both of the things they share:

- the CPU: a thread woken for a repaint queued behind its own process's model runs (ui_heartbeat --why: 25-97 ms
  of a worst gap "waited for a CPU", with other loads on the two cores). A background thread runs ``NICENESS``
  steps nicer, so when it and the UI thread both want a core the UI's turn comes first; alone, it still gets
  all the CPU the process has.
- Python's lock: each call from Qt into Python (every paint or event handler of a Python widget class) takes
  the lock, and a thread holding it lets go only after the switch interval (5 ms by default) has passed. A
  window repaint makes many such calls and could wait for each: a scroll bar's paint took 16 ms, the UI thread
  running 2 of them. ``SWITCH_INTERVAL`` makes a worker let go sooner.

ui_heartbeat --models densenet121 --tab activations, three alternating rounds each at load 3.4-5.5 on 2 cores:
worst gap 49-161 ms as before, 50-74 ms with the short switch interval alone, 38-59 ms with both. Both models,
four alternating rounds at load 4.4-5.9, worst gap with the short interval: 103-196 ms at nice 0, 41-136 ms at
nice 4, 45-104 ms at nice 10.

The memory releaser's thread is not one of these: it holds the heap's locks while it trims, which the UI thread
may wait on, so slowing it down would slow the UI too.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

NICENESS = 10
SWITCH_INTERVAL = 0.001  # seconds

_switch_interval_set = False


def give_way_to_the_ui() -> None:
    """Make the calling (background) thread nicer by ``NICENESS`` steps, and, once per process, shorten the
    switch interval of Python's lock. Linux keeps a nice value per thread; elsewhere only the latter applies."""
    global _switch_interval_set
    if not _switch_interval_set:
        _switch_interval_set = True
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
    if not sys.platform.startswith("linux"):
        return  # (there, a process's nice value is shared by its threads: the UI's would drop too)
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + NICENESS))
    except OSError:  # not permitted in some sandboxes: the thread keeps the UI's priority
        pass


def start_background_thread(target: Callable[..., object], name: str, *args: object) -> threading.Thread:
    """Start a daemon thread that runs ``target(*args)`` after ``give_way_to_the_ui``."""

    def run() -> None:
        give_way_to_the_ui()
        target(*args)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
