"""``python -m leadflow.app.cli``: the ``leadflow`` command without its installed script."""

from leadflow.app.cli import main

main()
