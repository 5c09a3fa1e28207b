"""Use cases: the order of every security check, in plain code (STYLE.md). No Flask here."""
