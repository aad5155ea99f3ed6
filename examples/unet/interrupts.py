"""Ctrl-C and SIGTERM as a flag that the training loop checks between steps."""

from __future__ import annotations

import contextlib
import pathlib
import signal
import sys
import threading


class Interrupted(KeyboardInterrupt):
  """Ctrl-C or SIGTERM; `checkpoint` is the saved step's folder, or None."""

  def __init__(self, signum: int, checkpoint: pathlib.Path | None = None):
    super().__init__(signal.Signals(signum).name)
    self.signum, self.checkpoint = signum, checkpoint


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred_stop():
  """Turns Ctrl-C and SIGTERM into a flag (the signal number) checked later.

  A KeyboardInterrupt raised inside JAX dispatch or compilation can crash the
  runtime (a segfault at start-up); stopping at a step boundary makes the
  checkpoint and exit clean. A second signal acts at once.
  """
  flag: list[int] = []
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return
  previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

  def handler(signum, frame):
    del frame
    flag.append(signum)
    print(
      f"\n{signal.Signals(signum).name}: stopping at the next step"
      " boundary (send it again to stop at once)",
      file=sys.stderr,
    )
    signal.signal(signum, previous[signum])

  for s in STOP_SIGNALS:
    signal.signal(s, handler)
  try:
    yield flag
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
