"""`python -m pigeon` runs the command line."""

from pigeon.cli import main

raise SystemExit(main())
