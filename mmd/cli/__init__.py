"""`mmd …`: one thin command per stage (each reads its params sections and calls the stage), the registry
and labels, and `mmd stage NAME`, the command every DVC stage runs.

Commands import what they use when they run, so `mmd --help` or a config error costs no torch import.
"""

from __future__ import annotations

import os

from mmd.cli.app import app
from mmd.cli import data, models, moderators  # noqa: F401  (importing them registers their commands on `app`)


def main() -> None:  # pragma: no cover - the console script
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded from a model hub at run time
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
