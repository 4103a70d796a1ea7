"""Strings from files are shown, never obeyed.

A dataset name, an attribute value or a MAT-file userblock can hold ESC sequences (colours,
cursor moves, OSC 8 hyperlinks, title changes), BEL, carriage returns and newlines (a
forged ``format: keras-legacy-model`` line in ``inspect``; live YAML in a draft's
comment), Unicode line separators and bidirectional overrides, and rich markup
(``[/oops]`` raised MarkupError). :func:`neutral` turns every such character into a
visible escape (``\\x1b``, ``\\n``, ``\\u202e``); :func:`markup` also escapes rich markup.
Printable text, non-ASCII letters included, is unchanged.
"""

from __future__ import annotations

import re

#: C0 and C1 controls, DEL, Unicode line/paragraph separators, bidi controls, BOM
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e"
                     "\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _esc(m: re.Match) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def neutral(s, *, keep_newlines: bool = False) -> str:
    """``s`` (any object: ``str()`` of it) with control characters shown as escapes."""
    s = s if isinstance(s, str) else str(s)
    if keep_newlines:
        return "\n".join(_UNSAFE.sub(_esc, part) for part in s.split("\n"))
    return _UNSAFE.sub(_esc, s)


#: what rich reads as a markup tag (``rich.markup.escape``'s own pattern)
_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def escape_markup(s: str) -> str:
    """``rich.markup.escape`` without importing rich (a fifth of a small ``inspect``'s own
    start-up when output goes to a pipe): tags escaped with a backslash, backslashes before
    them doubled, a trailing lone backslash doubled (tests/test_inspect.py compares the two
    on hostile strings)."""
    s = _TAG.sub(lambda m: f"{m.group(1)}{m.group(1)}\\{m.group(2)}", s)
    if s.endswith("\\") and not s.endswith("\\\\"):
        return s + "\\"
    return s


def markup(s) -> str:
    """:func:`neutral`, then rich markup escaped: safe inside a ``console.print`` string
    that has markup of its own."""
    return escape_markup(neutral(s))
