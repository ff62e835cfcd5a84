"""The one-line description of a caught exception, for the one-line error messages of bad input."""
from __future__ import annotations


def first_line(error: BaseException) -> str:
    """``TypeName: first line of the message`` (``TypeName`` alone when the message is empty): libraries'
    messages can run over many lines, and ours end in one."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
