"""`python -m lesion` = the `lesion` command."""

from lesion.cli import main

main()
