"""`python -m evaluation`: the grand-challenge evaluation entry point."""

from .gc import main

raise SystemExit(main())
