"""Text that idv stores: what SQLite, PostgreSQL and every UTF-8 encoder take alike."""

from __future__ import annotations


def storable(text: str) -> bool:
    """Whether ``text`` can be stored as it is on either database: no U+0000 (PostgreSQL's text
    types refuse it while SQLite keeps it, so the two would part ways) and no unpaired
    surrogate (not a Unicode scalar value, so no UTF-8 encoder takes it; RFC 7493 §2.1 forbids
    it in I-JSON). Python hands over undecodable command-line bytes as such surrogates."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
