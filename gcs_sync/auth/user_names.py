"""User names: the one set of rules for the names of an htpasswd file.

Two strengths of one rule, each for its caller:

- ``is_holdable``: what an htpasswd line can hold at all, as passlib reads and writes it
  (its field rule: UTF-8, at most 255 bytes, none of ``: \\n \\r \\t NUL``). A login with
  any other name is no user's (``htpasswd.HtpasswdChecker``): refused like a wrong
  password, never passlib's ValueError (a 500).
- ``check_editable_user_name``: a name ``users add|remove`` takes: holdable, and also
  not empty, printable, without spaces at either end (they would not survive an edit by
  hand) and not starting with ``#`` (the line would be a comment). A file written by hand
  may hold other holdable names; they still log in.
"""

from __future__ import annotations

MAX_BYTES = 255
# passlib.apache refuses these in a field: ':' ends the name, the others break the line.
_FIELD_BREAKERS = frozenset(":\n\r\t\x00")


class UserNameError(ValueError):
    """A name ``users add|remove`` do not take; the message names it and says the rule."""


def is_holdable(name: str) -> bool:
    """Whether an htpasswd line can hold ``name`` (passlib's rule for a field)."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, from undecodable command-line bytes
        return False
    return len(encoded) <= MAX_BYTES and not _FIELD_BREAKERS.intersection(name)


def check_editable_user_name(name: str) -> str:
    """``name`` if ``users add|remove`` take it, else UserNameError saying the rule."""
    if (not name or not name.isprintable() or name != name.strip() or name.startswith("#")
            or not is_holdable(name)):
        raise UserNameError(f"{name!r} is not a user name: 1 to 255 bytes, no ':', control characters, "
                            "leading '#' or surrounding spaces")
    return name
