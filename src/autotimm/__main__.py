"""`python -m autotimm`: the `autotimm` command line."""

from autotimm.cli import main

if __name__ == "__main__":
    main()
