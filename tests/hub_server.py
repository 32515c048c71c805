"""A small Hugging Face Hub look-alike on 127.0.0.1, for tests that drive the real `huggingface_hub` clients.

`FakeHub` serves the HTTP routes that `HfApi`, `hf_hub_download`/`snapshot_download`, `RepoCard`, `datasets`
(`Dataset.push_to_hub`, `load_dataset`) and `transformers` (`push_to_hub`, `from_pretrained`, `Trainer.push_to_hub`)
use for model and dataset repos: whoami, repo create/delete/info, README YAML validation, tree and paths-info
listings, commit history, branch creation, preupload (regular vs LFS), NDJSON commits, the LFS batch API with its PUT
target, and `resolve` downloads (with `ETag`, `X-Repo-Commit` and byte ranges). File contents live on disk under
`root/blobs/<sha256>`; repos, branches and commits (immutable `path -> blob` snapshots with fresh random 40-hex shas,
so a past commit sha still resolves) live in memory. A new repo starts with an "initial commit" of `.gitattributes`.

Clients read `HF_ENDPOINT` when `huggingface_hub` is imported, so run them in a subprocess with `hub.env(home)`.

Limits: no auth (every token is user `hub.user`; `private` is only recorded, never enforced); no Xet (the client
must run with `HF_HUB_DISABLE_XET=1`); models and datasets only (no spaces, buckets, kernels); commits go to existing
branches only (no PRs, tags or multipart LFS; `create_pr` is refused); LFS vs regular is decided by size, suffix and
NUL bytes, not by `.gitattributes`; repo info carries no card data (the server never parses README YAML: the
`validate_yaml` hook can reject cards); one lock around all metadata; no discussions, gating or conversions.
"""

import base64
import hashlib
import json
import secrets
import threading
import time
from functools import partialmethod
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

import pytest


GITATTRIBUTES = b"".join(
    b"*.%s filter=lfs diff=lfs merge=lfs -text\n" % e for e in (b"bin", b"safetensors", b"parquet")
)
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".parquet", ".arrow", ".npy", ".npz", ".onnx")
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub sends bigger files (and binary ones) through LFS


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def flag(values) -> bool:
    """A boolean from a parsed query string or form (`["True"]`, `["1"]`, missing: False) or a JSON value."""
    return str(values[0] if isinstance(values, list) else values).lower() in ("true", "1")


class HubError(Exception):
    """An error answer: the client maps `code` (the `X-Error-Code` header) to RepositoryNotFoundError etc."""

    def __init__(self, status: int, code: str | None, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


class FakeHub:
    def __init__(self, root, user: str = "user"):
        self.root, self.user = Path(root), user
        self.repos: dict[tuple[str, str], dict] = {}  # (repo_type, repo_id) -> {private, created, refs, commits}
        self.lock = threading.RLock()
        self.validate_yaml = None  # optional hook: (readme_text, repo_type) -> list of error messages
        self.url, self._server = None, None

    def start(self) -> "FakeHub":
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"hub": self}))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self, home) -> dict[str, str]:
        """Environment for a client subprocess; `home` becomes its HF_HOME, with every cache below it."""
        home = Path(home)
        return {
            **dict.fromkeys(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"), "0"),
            **dict.fromkeys(("HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_TELEMETRY"), "1"),
            **dict.fromkeys(("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"), "1"),
            **dict.fromkeys(("NO_PROXY", "no_proxy"), "127.0.0.1,localhost"),
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": "hf_dummy",
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_XET_CACHE": str(home / "xet"),
            "HF_DATASETS_CACHE": str(home / "datasets"),
        }

    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, bytes]:
        """Contents of a repo at `revision` (a branch or a commit sha), read straight from the store."""
        with self.lock:
            _, _, commit = self._resolve(repo_type, repo_id, revision)
        return {path: self._blob(f["sha256"]).read_bytes() for path, f in commit["files"].items()}

    # Store.
    def _blob(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def _put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self._blob(sha256).exists():
            tmp = self._blob(f"{sha256}.{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            tmp.replace(self._blob(sha256))
        return sha256

    def _file(self, sha256: str, lfs: bool) -> dict:
        """A tree entry: git blob id, and for LFS the pointer file's id and size (what the Hub reports)."""
        size = self._blob(sha256).stat().st_size
        if not lfs:
            return {"sha256": sha256, "size": size, "oid": git_blob_id(self._blob(sha256).read_bytes()), "lfs": None}
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
        return {"sha256": sha256, "size": size, "oid": git_blob_id(pointer), "lfs": len(pointer)}

    def _repo(self, repo_type: str, repo_id: str) -> dict:
        if (repo_type, repo_id) not in self.repos:
            raise HubError(404, "RepoNotFound", f"Repository {repo_type}/{repo_id} not found")
        return self.repos[(repo_type, repo_id)]

    def _resolve(self, repo_type: str, repo_id: str, revision: str | None) -> tuple[dict, str, dict]:
        repo = self._repo(repo_type, repo_id)
        sha = repo["refs"].get(revision or "main", revision)
        if sha not in repo["commits"]:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo, sha, repo["commits"][sha]

    def _commit(self, repo: dict, branch: str, title: str, files: dict) -> str:
        sha = secrets.token_hex(20)
        for f in files.values():
            f.setdefault("commit", sha)  # the commit that last changed the file
        parent = repo["refs"].get(branch)
        repo["commits"][sha] = {"id": sha, "title": title, "date": now(), "parent": parent, "files": files}
        repo["refs"][branch] = sha
        return sha

    def _entry(self, path: str, repo: dict, commit: dict, expand: bool) -> dict:
        f = commit["files"].get(path)
        entry = {"type": "directory", "oid": git_blob_id(f"{commit['id']}:{path}".encode()), "size": 0, "path": path}
        if f is not None:
            entry = {"type": "file", "oid": f["oid"], "size": f["size"], "path": path}
            if f["lfs"]:
                entry["lfs"] = {"oid": f["sha256"], "size": f["size"], "pointerSize": f["lfs"]}
        if expand:
            last = repo["commits"][f["commit"] if f else commit["id"]]
            entry["lastCommit"] = {"id": last["id"], "title": last["title"], "date": last["date"]}
        return entry

    def _url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"

    # Routes. Each returns a JSON payload (sent with 200) or a (status, body bytes, headers) tuple.
    def handle(self, method: str, path: str, query: dict, body: bytes, headers) -> tuple[int, object, dict]:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in ("models", "datasets"):
            action = parts[4].replace("-", "_") if len(parts) > 4 else "revision"
            route, args = getattr(self, f"_api_{action}", None), [unquote(p) for p in parts[5:]]
            repo_type, repo_id = parts[1][:-1], f"{parts[2]}/{parts[3]}"
            if route is not None:
                with self.lock:
                    return route(repo_type, repo_id, args, query, body)
        elif parts[0] == "api":
            route = {"whoami-v2": self._whoami, "validate-yaml": self._validate, "repos": self._repos}.get(parts[1])
            if route is not None:
                return route(parts[2:], json.loads(body or b"{}"))
        elif parts[0] == "lfs-upload" and method == "PUT":
            if hashlib.sha256(body).hexdigest() != parts[1]:
                raise HubError(400, None, "The uploaded body does not match its LFS oid")
            self._put_blob(body)
            return 200, b"", {}
        else:
            repo_type, parts = ("dataset", parts[1:]) if parts[0] == "datasets" else ("model", parts)
            if len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
                return self._lfs_batch(repo_type, f"{parts[0]}/{parts[1][:-4]}", json.loads(body))
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                path_in_repo = unquote("/".join(parts[4:]))
                return self._download(repo_type, f"{parts[0]}/{parts[1]}", unquote(parts[3]), path_in_repo, headers)
        raise HubError(404, None, f"FakeHub has no route for {method} {path}")

    def _whoami(self, parts: list[str], payload: dict) -> dict:
        token = {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}}
        return {"type": "user", "id": "0", "name": self.user, "fullname": self.user, "orgs": [], "auth": token}

    def _validate(self, parts: list[str], payload: dict) -> tuple[int, dict, dict]:
        errors = self.validate_yaml(payload["content"], payload.get("repoType")) if self.validate_yaml else []
        return (400 if errors else 200), {"errors": [{"message": m} for m in errors], "warnings": []}, {}

    def _repos(self, parts: list[str], payload: dict) -> dict:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        with self.lock:
            if parts == ["delete"]:
                self._repo(repo_type, repo_id)
                del self.repos[(repo_type, repo_id)]
                return {}
            if parts != ["create"]:
                raise HubError(404, None, f"FakeHub has no route /api/repos/{'/'.join(parts)}")
            if (repo_type, repo_id) in self.repos:  # create_repo(exist_ok=True) reads the url of the 409 answer
                raise HubError(409, None, "You already created this repo", url=self._url(repo_type, repo_id))
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = self.repos[(repo_type, repo_id)] = {"private": private, "created": now(), "refs": {}, "commits": {}}
            gitattributes = self._file(self._put_blob(GITATTRIBUTES), lfs=False)
            self._commit(repo, "main", "initial commit", {".gitattributes": gitattributes})
        return {"url": self._url(repo_type, repo_id), "name": repo_id}

    def _api_revision(self, repo_type: str, repo_id: str, args: list[str], query: dict, body) -> dict:
        repo, sha, commit = self._resolve(repo_type, repo_id, args[0] if args else None)
        siblings = []
        for path, f in sorted(commit["files"].items()):
            siblings.append({"rfilename": path})
            if flag(query.get("blobs")):
                siblings[-1] |= {"size": f["size"], "blobId": f["oid"]}
                if f["lfs"]:
                    siblings[-1]["lfs"] = {"size": f["size"], "sha256": f["sha256"], "pointerSize": f["lfs"]}
        author, created, private = repo_id.split("/")[0], repo["created"], repo["private"]
        return {"_id": repo_id, "id": repo_id, "author": author, "sha": sha, "private": private, "gated": False,
                "disabled": False, "downloads": 0, "likes": 0, "tags": [], "createdAt": created,
                "lastModified": commit["date"], "siblings": siblings}  # fmt: skip

    def _api_tree(self, repo_type: str, repo_id: str, args: list[str], query: dict, body) -> list[dict]:
        repo, _, commit = self._resolve(repo_type, repo_id, args[0])
        prefix = "/".join(args[1:]).strip("/")
        prefix += "/" if prefix else ""
        entries: set[str] = set()
        for path in commit["files"]:
            if path.startswith(prefix):
                names = path[len(prefix) :].split("/")
                depth = len(names) if flag(query.get("recursive")) else 1
                entries |= {prefix + "/".join(names[: i + 1]) for i in range(depth)}
        if prefix and not entries:  # `Dataset.push_to_hub` relies on this 404 for a missing data dir
            raise HubError(404, "EntryNotFound", f"{prefix} does not exist on {args[0]}")
        return [self._entry(path, repo, commit, flag(query.get("expand"))) for path in sorted(entries)]

    def _api_paths_info(self, repo_type: str, repo_id: str, args: list[str], query: dict, body) -> list[dict]:
        repo, _, commit = self._resolve(repo_type, repo_id, args[0])
        form = json.loads(body) if body.startswith(b"{") else parse_qs(body.decode())  # HfApi posts a form
        known = commit["files"].keys() | {str(d) for path in commit["files"] for d in PurePosixPath(path).parents}
        wanted = [path.strip("/") for path in form.get("paths", [])]
        return [self._entry(path, repo, commit, flag(form.get("expand"))) for path in wanted if path in known]

    def _api_commits(self, repo_type: str, repo_id: str, args: list[str], query: dict, body) -> list[dict]:
        repo, sha, _ = self._resolve(repo_type, repo_id, args[0])
        history = []
        while sha is not None:
            c = repo["commits"][sha]
            history.append({"id": sha, "title": c["title"], "message": "", "authors": [], "date": c["date"]})
            sha = c["parent"]
        return history

    def _api_branch(self, repo_type: str, repo_id: str, args: list[str], query: dict, body) -> dict:
        repo = self._repo(repo_type, repo_id)
        if args[0] in repo["refs"]:
            raise HubError(409, None, f"Branch {args[0]} already exists")
        repo["refs"][args[0]] = self._resolve(repo_type, repo_id, json.loads(body or b"{}").get("startingPoint"))[1]
        return {}

    def _api_preupload(self, repo_type: str, repo_id: str, args: list[str], query: dict, body: bytes) -> dict:
        _, sha, commit = self._resolve(repo_type, repo_id, args[0])
        answers = []
        for f in json.loads(body)["files"]:
            binary = b"\0" in base64.b64decode(f.get("sample", ""))
            lfs = f["size"] >= LFS_MIN_SIZE or f["path"].lower().endswith(LFS_SUFFIXES) or binary
            old = commit["files"].get(f["path"])  # the client skips files whose oid is unchanged
            oid = old and (old["sha256"] if lfs else git_blob_id(self._blob(old["sha256"]).read_bytes()))
            mode = "lfs" if lfs else "regular"
            answers.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return {"files": answers, "commitOid": sha}

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict) -> dict:
        self._repo(repo_type, repo_id)
        objects = []
        for obj in payload["objects"]:
            objects.append({"oid": obj["oid"], "size": obj["size"], "authenticated": True})
            if not self._blob(obj["oid"]).exists():  # no "actions": the client skips the upload
                objects[-1]["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}
        return {"transfer": "basic", "objects": objects}

    def _api_commit(self, repo_type: str, repo_id: str, args: list[str], query: dict, body: bytes) -> dict:
        repo, sha, commit = self._resolve(repo_type, repo_id, args[0])
        if "create_pr" in query or args[0] not in repo["refs"]:
            raise HubError(400, None, "FakeHub only commits to existing branches (no pull requests)")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        if header.get("parentCommit") not in (None, sha):
            raise HubError(412, None, f"Parent commit {header['parentCommit']} is not the head of {args[0]}")
        files = dict(commit["files"])
        for key, value in ((line["key"], line["value"]) for line in lines):
            path = value.get("path", "").strip("/")
            if key == "file":
                files[path] = self._file(self._put_blob(base64.b64decode(value["content"])), False)
            elif key == "lfsFile":
                if not self._blob(value["oid"]).exists():
                    raise HubError(400, None, f"LFS object {value['oid']} for {path} was never uploaded")
                files[path] = self._file(value["oid"], True)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {path}")
            elif key == "deletedFolder":
                files = {p: f for p, f in files.items() if not p.startswith(f"{path}/")}
            elif key != "header":
                raise HubError(400, None, f"FakeHub does not support the commit operation {key!r}")
        new = self._commit(repo, args[0], header.get("summary", ""), files)
        commit_url = f"{self._url(repo_type, repo_id)}/commit/{new}"
        return {"success": True, "commitOid": new, "commitUrl": commit_url, "hookOutput": "", "pullRequestUrl": None}

    def _download(self, repo_type: str, repo_id: str, rev: str, path: str, headers) -> tuple[int, bytes, dict]:
        with self.lock:
            _, sha, commit = self._resolve(repo_type, repo_id, rev)
        if path not in commit["files"]:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}")
        f = commit["files"][path]
        data = self._blob(f["sha256"]).read_bytes()
        etag = f["sha256"] if f["lfs"] else f["oid"]  # what the cache names blobs after
        out = {"ETag": f'"{etag}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}  # fmt: skip
        start, _, end = headers.get("Range", "").removeprefix("bytes=").partition("-")
        if headers.get("Range", "").startswith("bytes=") and (start or end).isdigit() and data:
            first = int(start) if start else max(0, len(data) - int(end))
            last = min(int(end), len(data) - 1) if start and end else len(data) - 1
            out["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            return 206, data[first : last + 1], out
        return 200, data, out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' connection pools expect
    hub: FakeHub

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []  # streamed LFS uploads come chunked
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers, up to the blank line
            pass
        return b"".join(chunks)

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._body() if method in ("POST", "PUT", "DELETE") else b""
        try:
            answer = self.hub.handle(method, url.path, parse_qs(url.query), body, self.headers)
            status, payload, headers = answer if isinstance(answer, tuple) else (200, answer, {})
        except HubError as e:
            status, payload = e.status, {"error": str(e), **e.extra}
            headers = {"X-Error-Code": e.code} if e.code else {}
        except Exception as e:  # a FakeHub bug: answer 500 rather than drop the connection
            status, payload, headers = 500, {"error": f"FakeHub: {e!r}"}, {}
        if not isinstance(payload, bytes):
            payload, headers = json.dumps(payload).encode(), {"Content-Type": "application/json", **headers}
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    do_GET, do_HEAD = partialmethod(_dispatch, "GET"), partialmethod(_dispatch, "HEAD")
    do_POST, do_PUT = partialmethod(_dispatch, "POST"), partialmethod(_dispatch, "PUT")
    do_DELETE = partialmethod(_dispatch, "DELETE")


@pytest.fixture(scope="session")
def fake_hub(tmp_path_factory):
    """One FakeHub for the whole session: give each test its own repo ids."""
    with FakeHub(tmp_path_factory.mktemp("fake_hub")) as hub:
        yield hub
