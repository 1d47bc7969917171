"""``python -m infraflow.cli``."""

from infraflow.cli.app import main

main()
