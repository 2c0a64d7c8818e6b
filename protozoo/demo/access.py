"""Which models a visitor may load, decided before anything on the server is looked at.

In public mode a visitor loads zoo names, the Hub ids the operator allowed, and the model the demo started
with; local folders and files only when the operator passed ``allow_local``. Every refusal is one message
that depends only on the name typed, so the demo's answers never tell whether a path exists on the server.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from protozoo import registry

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_SHOWN = 80  # characters of a refused name quoted back


class Refused(ValueError):
    """A name public mode does not load; the message reads the same whatever exists on the server."""


@dataclass(frozen=True)
class ModelSource:
    """What a typed name resolved to: a zoo name, a Hub id, or a local folder or file (absolute)."""

    kind: Literal["zoo", "hub", "local"]
    name: str


def is_loopback(host: str) -> bool:
    """True when ``host`` ("127.0.0.1", "::1", "localhost") only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name or "0.0.0.0"-like wildcard spelled otherwise: reachable from outside
        return False


class Access:
    """The demo's loading policy: open (local use) or public (served to visitors).

    Args:
        public: refuse everything but zoo names, ``allow_models`` and models added with :meth:`allow`.
        allow_models: Hub ids "org/name" visitors may load in public mode.
        allow_local: in public mode, also let visitors load local folders (and prototype files) by path.
            Whether such a path exists then shows in the answers, so keep it to trusted audiences.

    Raises:
        ValueError: an entry of ``allow_models`` that is not a Hub id.
    """

    def __init__(self, public: bool, allow_models: Iterable[str] = (), allow_local: bool = False) -> None:
        allowed = [m.strip() for m in allow_models if m.strip()]
        bad = [m for m in allowed if not _REPO_ID.fullmatch(m)]
        if bad:
            raise ValueError(
                f"allow_models takes Hub ids 'org/name', got {', '.join(map(repr, bad))}; zoo names are "
                "always allowed, and local folders need allow_local"
            )
        self.public, self.allow_local = public, allow_local
        self.allowed = {m: ModelSource("hub", m) for m in allowed}

    def allow(self, source: ModelSource) -> None:
        """Let visitors load ``source`` by its name too (the model the demo was started with)."""
        self.allowed[source.name] = source

    def source(self, text: str, files: bool = False) -> ModelSource:
        """Resolve a typed name, or refuse it before looking at the filesystem.

        Args:
            text: a zoo name, Hub id, or local folder (or, with ``files``, a prototype file) path.
            files: accept a path to a file as well as to a folder.

        Returns:
            The source to load. Outside public mode a name that is neither a zoo name, an existing path nor
            a Hub id comes back as "local", so that the loader's own error explains what is wrong.

        Raises:
            ValueError: an empty name.
            Refused: in public mode, a name that is not allowed.
        """
        text = text.strip()
        if not text:
            raise ValueError("No model given: pick a zoo model or type a zoo name, Hub id or model folder.")
        if text in registry.ZOO:
            return ModelSource("zoo", text)
        if text in self.allowed:
            return self.allowed[text]
        if self.public and not self.allow_local:
            raise self.refusal(text)
        path = Path(text).expanduser()
        if path.is_dir() or (files and path.is_file()):
            return ModelSource("local", str(path.resolve()))
        if self.public:
            raise self.refusal(text)
        return ModelSource("hub" if _REPO_ID.fullmatch(text) else "local", text)

    def refusal(self, text: str) -> Refused:
        """The one refusal of public mode, quoting ``text`` and listing what may be loaded."""
        shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
        served = ["a zoo model"]
        hub = [name for name, s in self.allowed.items() if s.kind == "hub"]
        if hub:
            served.append(f"one of the Hub models {', '.join(hub)}")
        if self.allow_local:
            served.append("a model folder this server can read")
        return Refused(f"{shown!r} is not a model this demo serves; load {' or '.join(served)}.")
