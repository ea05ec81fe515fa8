"""`python -m mmd.cli …`, the same as the `mmd` command."""

from mmd.cli import main

main()
