"""``python -m selfee``: the ``selfee-fast`` command line."""

from selfee.cli.app import main

if __name__ == "__main__":
    main()
