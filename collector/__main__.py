"""``python -m eventscope.collector`` runs the ``eventscope`` command."""

from ._cli import main

if __name__ == "__main__":
    main()
