"""``python -m pytest_mlload.demo``: the command that starts the demo inference server.

The server is a test harness and lives in :mod:`pytest_mlload.testing.demo`; this module
keeps the command (and ``from pytest_mlload.demo import DemoServerProcess``) where users
learned them.
"""

from __future__ import annotations

from pytest_mlload.testing.demo import DemoServerProcess, main

__all__ = ["DemoServerProcess", "main"]

if __name__ == "__main__":
    main()
