"""``python -m tidings``: the same as the ``tidings`` command."""

from .cli.main import main

main()
