"""``python -m selfee.cli`` (e.g. under ``torchrun --nproc-per-node N -m selfee.cli embed ...``)."""

from selfee.cli.app import main

if __name__ == "__main__":
    main()
