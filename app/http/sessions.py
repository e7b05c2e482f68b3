"""Sessions: an optional client-chosen id that ties a user's requests together (impressions carry it, and
rollouts route by it). Given as the X-Session-ID header, `session` in a body or `session` in /topk's query;
1 to 64 printable ASCII characters without spaces, so it is safe in logs, tokens and database rows."""
from __future__ import annotations

import re

from starlette.requests import Request

from ..errors import InvalidInput

HEADER = b"x-session-id"
MAX_SESSION = 64
_ALLOWED = re.compile(r"[!-~]{1,64}")


def session_problem(value: str) -> str | None:
    """What is wrong with a session id, or None."""
    if _ALLOWED.fullmatch(value):
        return None
    if not value:
        return "is empty; leave it out, or give 1 to 64 characters"
    if len(value) > MAX_SESSION:
        return f"has {len(value)} characters; at most {MAX_SESSION}"
    return "may hold only printable ASCII characters without spaces (! to ~)"


def check_session(value: str, where: str = "") -> str:
    problem = session_problem(value)
    if problem is not None:
        raise InvalidInput("session", f"{where}{problem}")
    return value


def session_of(request: Request, given: str | None) -> str | None:
    """The request's session: `given` (its body's or query's, already checked) or the X-Session-ID header."""
    header = None
    for name, value in request.scope["headers"]:
        if name == HEADER:
            if header is not None:
                raise InvalidInput("session", "the X-Session-ID header is given more than once")
            header = check_session(value.decode("latin-1"), "the X-Session-ID header ")
    if header is not None and given is not None and header != given:
        raise InvalidInput("session", "the X-Session-ID header and session differ; give one of them")
    return given if given is not None else header
