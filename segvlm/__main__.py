"""``python -m segvlm ...`` runs the command line (the same as the ``segvlm`` command)."""

from segvlm.cli import main

if __name__ == "__main__":
    main()
