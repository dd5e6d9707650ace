"""Load models in the background while the current one keeps control. ROS-free.

    loader = BackgroundLoader(load)     # load(key) -> model, may raise
    loader.request("/ckpt/a")           # returns at once; loads on the loader's thread
    done = loader.take()                # (key, model or the exception), once; None until then

One load runs at a time. A request made while another loads is served next; of several such
requests only the newest is (the operator changed their mind).
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class BackgroundLoader:
    def __init__(self, load: Callable[[str], Any]):
        self._load = load
        self._lock = threading.Lock()
        self._wanted: str | None = None  # the newest request not yet started
        self._done: tuple[str, Any] | None = None
        self._thread: threading.Thread | None = None

    def request(self, key: str) -> None:
        with self._lock:
            self._wanted = key
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
                self._thread.start()

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._thread is not None

    def take(self) -> tuple[str, Any] | None:
        """The newest finished load, once: (key, model) or (key, the exception it raised)."""
        with self._lock:
            done, self._done = self._done, None
            return done

    def join(self, timeout_s: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._lock:
                key, self._wanted = self._wanted, None
                if key is None:
                    self._thread = None
                    return
            try:
                result = self._load(key)
            except Exception as err:  # handed to the caller, who reports it
                result = err
            with self._lock:
                if self._wanted is None:  # not superseded while loading
                    self._done = (key, result)
