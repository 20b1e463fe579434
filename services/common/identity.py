"""Who a call is for: the gateway's users (one bearer token each), and the grant with which a service acts on
a user's behalf after the user has gone (the comparator submitting an experiment's runs).

The gateway resolves a caller's bearer token to a user name. When it forwards an experiment to the
comparator it sends the user's name and a grant: an HMAC of the name under that user's own token, which only
the gateway (holding the tokens) can make or check. The comparator keeps the grant with the experiment and
sends it back, with the service token, on each SubmitRun/CancelRun it makes for it; the gateway then serves
that call as that user, with that user's rights and limits. The grant is not the user's token (it cannot be
used as a bearer token), it is useless without the service token, it only opens the two run calls, and
rotating or removing the user's token revokes it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

CALLER_KEY = "x-peftlab-caller"  # the user a trusted service acts for
GRANT_KEY = "x-peftlab-grant"  # the gateway's proof that the user asked for it
ANONYMOUS = "anonymous"  # every caller of a gateway without tokens (one user, one set of limits)
DEFAULT_USER = "default"  # the holder of the single PEFTLAB_API_TOKEN
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
_GRANT_CONTEXT = b"peftlab-grant:v1:"


@dataclass(frozen=True)
class Principal:
    """The user a background action is for, and the grant the gateway gave for it ("" without auth)."""

    caller: str = ANONYMOUS
    grant: str = ""

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((CALLER_KEY, self.caller),) + (((GRANT_KEY, self.grant),) if self.grant else ())


def valid_user(name: str) -> bool:
    return bool(_USER.match(name or ""))


def may_change(owner: str, caller: str) -> bool:
    """Whether `caller` may cancel or resume a thing that `owner` submitted. A thing without an owner is
    anyone's: "" (recorded before owners were) and "anonymous" (made by a gateway without tokens, where all
    callers are one user; after tokens are turned on, no signed-in user is its owner more than another)."""
    return owner in ("", ANONYMOUS) or owner == caller


def mint_grant(user: str, token: str) -> str:
    return hmac.new(token.encode(), _GRANT_CONTEXT + user.encode(), hashlib.sha256).hexdigest()


class ApiTokens:
    """The gateway's users: name -> bearer token. Lookups compare every token in constant time."""

    def __init__(self, tokens: dict[str, str]):
        for name, token in tokens.items():
            if not valid_user(name):
                raise ValueError(f"user name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-'")
            if not token:
                raise ValueError(f"user {name!r} has an empty token")
        if len(set(tokens.values())) != len(tokens):
            raise ValueError("two users share one token (each token must name one user)")
        self._tokens = {name: token.encode() for name, token in tokens.items()}

    @classmethod
    def from_settings(cls, token: str = "", tokens_file: Path | None = None) -> ApiTokens:
        """PEFTLAB_API_TOKEN (the user 'default') and/or a file of `NAME TOKEN` lines ('#' comments)."""
        tokens = {DEFAULT_USER: token} if token else {}
        if tokens_file:
            try:
                lines = Path(tokens_file).read_text().splitlines()
            except OSError as exc:
                raise ValueError(f"PEFTLAB_API_TOKENS_FILE={tokens_file}: {exc.strerror}") from None
            for number, line in enumerate(lines, start=1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = line.split()
                if len(parts) != 2:
                    raise ValueError(f"{tokens_file}:{number}: expected 'NAME TOKEN'")
                if parts[0] in tokens:
                    raise ValueError(f"{tokens_file}:{number}: user {parts[0]!r} appears twice")
                tokens[parts[0]] = parts[1]
        return cls(tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def user_of(self, authorization: str) -> str | None:
        """The user whose `Bearer <token>` this is, or None."""
        given = authorization.encode()
        found = None
        for name, token in self._tokens.items():  # no early exit: the time does not depend on which matched
            if hmac.compare_digest(given, b"Bearer " + token):
                found = name
        return found

    def grant_for(self, user: str) -> str:
        token = self._tokens.get(user)
        return mint_grant(user, token.decode()) if token else ""

    def grant_valid(self, user: str, grant: str) -> bool:
        expected = self.grant_for(user)
        return bool(expected) and hmac.compare_digest(expected.encode(), grant.encode())
