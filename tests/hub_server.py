"""A small in-memory Hugging Face Hub for the tests, served on 127.0.0.1 in a thread.

It speaks just enough of the Hub's HTTP protocol for huggingface_hub's real client (HfApi,
snapshot_download, hf_hub_download and timm's ``hf-hub:`` loading) to create repos, commit files,
branch, list and download. Every file is a regular git blob: preupload answers "regular", so the
commit NDJSON carries each file inline as base64. Read from huggingface_hub 2.4's own client code
(``hf_api.py``, ``_commit_api.py``, ``file_download.py``, ``_snapshot_download.py``):

- ``POST /api/repos/create``                         create a repo (409 when it exists)
- ``POST /api/validate-yaml``                        README.md metadata check before a commit
- ``POST /api/models/{repo}/preupload/{rev}``        upload mode of each file
- ``POST /api/models/{repo}/commit/{rev}``           NDJSON: header, then one line per file added or deleted
- ``POST /api/models/{repo}/branch/{branch}``        create a branch (409 when it exists)
- ``GET  /api/models/{repo}[/revision/{rev}]``       model info: sha and siblings (sizes with ?blobs=true)
- ``GET  /api/models/{repo}/tree/{rev}``             file listing (one page)
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``          file with X-Repo-Commit, ETag, Content-Length

Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) as the Hub's do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/(preupload|commit|branch|revision|tree)/([^/]+))?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_COMMIT_OID = re.compile(r"^[0-9a-f]{40}$")


def blob_oid(content: bytes) -> str:
    """Git's blob id of a file: sha1 of "blob <size>\\0" + content (the Hub's ETag of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    """One model repo: its commits (oid -> files) and branches (name -> commit oid)."""

    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], message: str) -> str:
        oid = hashlib.sha1(f"{len(self.commits)}:{message}:{sorted(files)}".encode()).hexdigest()
        self.commits[oid] = files
        return oid

    def resolve(self, revision: str) -> dict[str, bytes] | None:
        oid = self.branches.get(revision, revision if revision in self.commits else None)
        return None if oid is None else self.commits[oid]

    def oid(self, revision: str) -> str:
        return self.branches.get(revision, revision)


class HubServer:
    """The server and its state; ``url`` is the endpoint to point huggingface_hub at.

    Attributes:
        repos: repo id -> :class:`Repo`.
        requests: (method, path, Authorization header) of every request received, in order.
        delay: seconds each file download waits before answering (a slow Hub).
    """

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        self.delay = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_HEAD(self) -> None:
                server._handle(self, "HEAD")

            def do_POST(self) -> None:
                server._handle(self, "POST")

            def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> HubServer:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at a branch or commit."""
        files = self.repos[repo_id].resolve(revision)
        assert files is not None, f"{repo_id} has no revision {revision}"
        return files

    # ---- request handling ----
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        path, blobs = url.path, parse_qs(url.query).get("blobs", [""])[0].lower() == "true"
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method == "POST" else b""
        with self.lock:
            self.requests.append((method, path, h.headers.get("Authorization")))
            status, headers, payload = self._route(method, path, body, blobs)
        if self.delay and _RESOLVE.match(path):
            time.sleep(self.delay)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(status)
        for key, value in {
            "Content-Type": "application/json",
            **headers,
            "Content-Length": str(len(data)),
        }.items():
            h.send_header(key, value)
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(data)

    def _route(self, method: str, path: str, body: bytes, blobs: bool) -> tuple[int, dict[str, str], object]:
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body)["content"])
        if match := _API.match(path):
            repo_id, action, arg = match.group(1), match.group(2), unquote(match.group(3) or "main")
            repo = self.repos.get(repo_id)
            if repo is None:
                return _error(404, "RepoNotFound", f"Repository {repo_id} not found")
            if method == "POST" and action == "branch":
                return self._create_branch(repo, arg, json.loads(body or b"{}"))
            if repo.resolve(arg) is None:
                return _error(404, "RevisionNotFound", f"Invalid rev id: {arg}")
            if method == "POST" and action == "preupload":
                files = json.loads(body)["files"]
                return (
                    200,
                    {},
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                        ]
                    },
                )
            if method == "POST" and action == "commit":
                return self._commit(repo_id, repo, arg, body)
            if method == "GET" and action in (None, "revision"):
                files = repo.resolve(arg) or {}
                info = {"id": repo_id, "modelId": repo_id, "sha": repo.oid(arg), "private": repo.private}
                siblings = [
                    {"rfilename": name} | ({"size": len(data), "blobId": blob_oid(data)} if blobs else {})
                    for name, data in sorted(files.items())
                ]
                return 200, {}, info | {"siblings": siblings}
            if method == "GET" and action == "tree":
                files = repo.resolve(arg) or {}
                return (
                    200,
                    {},
                    [
                        {"type": "file", "path": name, "size": len(data), "oid": blob_oid(data)}
                        for name, data in sorted(files.items())
                    ],
                )
        if method in ("GET", "HEAD") and (match := _RESOLVE.match(path)):
            return self._resolve(match.group(1), unquote(match.group(2)), unquote(match.group(3)))
        return _error(404, None, f"{method} {path} is not part of this test Hub")

    def _create_repo(self, payload: dict) -> tuple[int, dict[str, str], object]:
        repo_id = f"{payload['organization']}/{payload['name']}"
        if repo_id in self.repos:
            return 409, {}, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
        repo = Repo(private=payload.get("visibility") == "private")
        repo.branches["main"] = repo.commit({}, "initial commit")
        self.repos[repo_id] = repo
        return 200, {}, {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def _validate_yaml(self, content: str) -> tuple[int, dict[str, str], object]:
        match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        try:
            if match is None or not isinstance(yaml.safe_load(match.group(1)), dict):
                return 400, {}, {"errors": [{"message": "README.md has no YAML metadata block"}]}
        except yaml.YAMLError as e:
            return 400, {}, {"errors": [{"message": str(e)}]}
        return 200, {}, {"errors": [], "warnings": []}

    def _create_branch(self, repo: Repo, branch: str, payload: dict) -> tuple[int, dict[str, str], object]:
        if branch in repo.branches:
            return _error(409, None, f"Reference already exists: refs/heads/{branch}")
        start = repo.oid(payload.get("startingPoint", "main"))
        if start not in repo.commits:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {start}")
        repo.branches[branch] = start
        return 200, {}, {}

    def _commit(
        self, repo_id: str, repo: Repo, branch: str, body: bytes
    ) -> tuple[int, dict[str, str], object]:
        if branch not in repo.branches:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {branch}")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        files = dict(repo.commits[repo.branches[branch]])
        for line in lines[1:]:
            if line["key"] == "deletedFile":
                if files.pop(line["value"]["path"], None) is None:
                    return _error(404, "EntryNotFound", f"{line['value']['path']} does not exist")
                continue
            if line["key"] != "file" or line["value"].get("encoding") != "base64":
                return _error(400, None, f"this test Hub only takes inline base64 files, got {line['key']}")
            files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        oid = repo.branches[branch] = repo.commit(files, lines[0]["value"]["summary"])
        return 200, {}, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid}

    def _resolve(self, repo_id: str, revision: str, filename: str) -> tuple[int, dict[str, str], object]:
        repo = self.repos.get(repo_id)
        if repo is None:
            return _error(404, "RepoNotFound", f"Repository {repo_id} not found")
        files = repo.resolve(revision)
        if files is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        headers = {"X-Repo-Commit": repo.oid(revision)}
        if filename not in files:
            return 404, headers | {"X-Error-Code": "EntryNotFound"}, {"error": f"{filename} does not exist"}
        data = files[filename]
        return (
            200,
            headers | {"ETag": f'"{blob_oid(data)}"', "Content-Type": "application/octet-stream"},
            data,
        )


def _error(status: int, code: str | None, message: str) -> tuple[int, dict[str, str], object]:
    headers = {"X-Error-Message": message} | ({"X-Error-Code": code} if code else {})
    return status, headers, {"error": message}
