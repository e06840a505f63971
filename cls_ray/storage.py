"""One filesystem abstraction for durable files: a local folder, or an object store or shared
filesystem by URI (`s3://bucket/prefix`, `gs://...`, `hdfs://...`), through `pyarrow.fs`.

The same calls work on both, so the code that writes replay-buffer segments (and reads them with
Ray Data) does not know where they live. Credentials and endpoints come from the environment the
way the cloud SDKs read them (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, ...) or from the URI's
query (`?endpoint_override=host:port&scheme=http`); never from the config file. A URI may name
`${VAR}`s (`s3://${BUCKET}/state`): they are read from the environment where the URI is opened,
and a remote URI keeps them wherever it is written down (the registry's artifact URIs, the Serve
application's config, the replay buffer's leases), so a secret in it is never stored. (A local
folder is its path.)

Writes are whole or absent: a local file is written under a temporary name, fsynced and renamed;
an object store publishes an object only when its upload completes.

Keys stay below the root: an absolute key, a `..` component or (local) a path that resolves out
of the root is refused, and so is a downloaded object that would land outside its folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq


def expand_refs(uri: str) -> str:
    """`uri` with its `${VAR}` read from the environment; an error naming VAR when it is unset.
    Called where a URI is opened, never where it is stored."""
    if "${" not in uri:
        return uri
    out = os.path.expandvars(uri)
    if "${" in out:
        missing = out[out.index("${") + 2 :].split("}")[0]
        raise StorageError(f"storage {uri!r} reads ${{{missing}}} from the environment: not set")
    return out


def is_remote(uri: str) -> bool:
    """A URI of another filesystem (`s3://`, ...), not a local path or `file://`."""
    return "://" in uri and not uri.startswith("file://")


def join_uri(uri: str, rel: str) -> str:
    """`rel` below `uri`, keeping the URI's query (`?endpoint_override=...`) at the end."""
    base, _, query = uri.partition("?")
    rel = rel.strip("/")
    joined = base.rstrip("/") + (f"/{rel}" if rel else "")
    return joined + (f"?{query}" if query else "")


def open_uri(uri: str):
    """(filesystem, path) of a path or storage URI (its `${VAR}` read from the environment)."""
    real = expand_refs(uri)
    if is_remote(real):
        try:
            return pafs.FileSystem.from_uri(real)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds
            # Named as written: the message must not carry what `${VAR}`s expand to.
            detail = str(e) if real == uri else type(e).__name__
            raise StorageError(f"storage {uri!r}: {detail}") from None
    return pafs.LocalFileSystem(), real.removeprefix("file://")


def read_table(uri: str, columns: list[str] | None = None):
    """A Parquet file by path or storage URI, as an Arrow table."""
    fs, path = open_uri(uri)
    return pq.read_table(path, columns=columns, filesystem=fs)


def write_atomically(path: str | Path, data: bytes) -> None:
    """`data` at the local `path`, whole or not at all: written under a unique temporary name
    beside it, fsynced, then renamed over it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def materialize(uri: str | None, cache_dir: str | Path) -> str | None:
    """A local folder holding the artifact at `uri`: the path itself when it is local, else a
    copy under `cache_dir` (downloaded once, under a temporary name, then renamed, so a reader
    never sees half a copy)."""
    if uri is None:
        return None
    real = expand_refs(uri)
    if not is_remote(real):
        return real.removeprefix("file://")
    dest = Path(cache_dir) / hashlib.sha256(real.encode()).hexdigest()[:20]
    if not dest.exists():
        tmp = dest.with_name(f"{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
        Storage(uri).get_dir("", tmp)
        try:
            tmp.rename(dest)
        except OSError:  # another replica on this node got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


def mirror_reports(cfg) -> str | None:
    """Copies `state_dir/reports` (figures, plots, the gate's decisions) to the storage's
    `reports/` when `storage.uri` is set; returns where, or None."""
    uri = cfg.storage.uri  # as written: `Storage` reads its `${VAR}`s
    local = cfg.state_path / "reports"
    if not uri or not local.is_dir():
        return None
    return Storage(uri).put_dir(local, "reports")


class StorageError(ValueError):
    """A storage URI that cannot be used; the message names it."""


class Storage:
    def __init__(self, uri: str | Path):
        self.uri = str(uri)  # as written, `${VAR}`s and all: what `url` and pickling pass on
        fs, root = open_uri(self.uri)
        self.local = not is_remote(expand_refs(self.uri))
        if self.local:
            root = str(Path(root).expanduser().resolve())
        elif not root.strip("/"):
            raise StorageError(f"storage {self.uri!r}: name a bucket (and a prefix)")
        self.fs, self.root = fs, root.rstrip("/")
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"Storage({self.uri!r})"

    def __reduce__(self):  # Ray tasks get the URI and build their own filesystem
        return (Storage, (self.uri,))

    # -- paths -----------------------------------------------------------------------------
    def key(self, rel: str) -> str:
        """`rel` checked to stay below the root: relative, no `..`, and for a local folder not
        resolving (through a link) out of it. Returns it without surrounding slashes."""
        if rel.startswith("/"):
            raise ValueError(f"storage {self.uri!r}: key {rel!r} is absolute; keys are relative")
        if ".." in rel.split("/"):
            raise ValueError(f"storage {self.uri!r}: key {rel!r} climbs out of the root ('..')")
        rel = rel.strip("/")
        if self.local and rel and not _inside(Path(self.root, rel), Path(self.root)):
            raise ValueError(f"storage {self.uri!r}: key {rel!r} resolves outside {self.root}")
        return rel

    def path(self, rel: str = "") -> str:
        """The filesystem path of `rel` (what `pyarrow` readers take with `self.fs`)."""
        rel = self.key(rel)
        return f"{self.root}/{rel}" if rel else self.root

    def child(self, rel: str) -> Storage:
        """The storage rooted at `rel` below this one."""
        return Storage(join_uri(self.uri, self.key(rel)))

    # -- files -----------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self.path(rel)
        if self.local:
            write_atomically(target, data)
            return
        with self.fs.open_output_stream(target) as f:
            f.write(data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def read_bytes(self, rel: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except FileNotFoundError:
            raise  # a local miss is already one
        except OSError as e:
            if "not exist" in str(e) or "NoSuchKey" in str(e) or "Path does not exist" in str(e):
                raise FileNotFoundError(f"{self.uri}: no {rel}") from e
            raise

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def list(self, rel: str = "", suffix: str = "") -> list[str]:
        """Names (not paths) of the files directly in `rel`, sorted; temporary files skipped."""
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True, recursive=False)
        names = [
            i.base_name
            for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.File and ".tmp-" not in i.base_name
        ]
        return sorted(n for n in names if n.endswith(suffix))

    def delete(self, rel: str) -> None:
        """Removes a file or a folder; a missing one is not an error."""
        info = self.fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(rel))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(rel))

    # -- folders ---------------------------------------------------------------------------
    def put_dir(self, local_dir: str | Path, rel: str) -> str:
        """Copies a local folder (an adapter, a checkpoint) under `rel`; returns its URI. The
        caller publishes the URI (registers the version) only after this returns."""
        src, rel = Path(local_dir), self.key(rel)
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            name = f.relative_to(src).as_posix()
            self.write_bytes(f"{rel}/{name}" if rel else name, f.read_bytes())
        return self.url(rel)

    def get_dir(self, rel: str, local_dir: str | Path) -> Path:
        """Copies the folder at `rel` to `local_dir` (created); returns it. An object whose name
        would put it outside `local_dir` is refused before anything is written."""
        out = Path(local_dir)
        base = self.path(rel)
        sel = pafs.FileSelector(base, recursive=True)
        found = [i for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File]
        if not found:
            raise FileNotFoundError(f"{self.uri}: no folder {rel}")
        dests = []
        for i in found:
            name = i.path[len(base) :].lstrip("/")
            dest = out / name
            if ".." in name.split("/") or not _inside(dest, out):
                raise ValueError(
                    f"storage {self.uri!r}: object {i.path!r} would be written outside {out}"
                )
            dests.append(dest)
        for i, dest in zip(found, dests, strict=True):
            dest.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(i.path) as f:
                dest.write_bytes(f.read())
        return out

    def url(self, rel: str = "") -> str:
        """A URI of `rel` that `Storage(...)` opens again (a local path stays a path)."""
        return self.path(rel) if self.local else join_uri(self.uri, self.key(rel))


def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, links resolved, is `root` or below it."""
    return path.resolve().is_relative_to(root.resolve())
