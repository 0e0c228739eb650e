"""Workdir paths and files that work locally and on object stores (`gs://` on Cloud TPU pods).

A training workdir is either a local directory or a URL such as `gs://bucket/runs/afc_t`.
Local paths are made absolute (a relative workdir means the same directory after a `cd`);
URLs are kept as they are (`os.path.abspath("gs://b/r")` would silently turn them into a
local `./gs:/b/r` directory on each host, and every checkpoint would be lost with the VM).
Every file afc-jax writes into a workdir goes through `etils.epath`, which reaches object stores
through TensorFlow's or fsspec's file systems; orbax checkpoints and TensorBoard do too.

Object stores cannot append to a file, so `JsonLines` rewrites the whole (small) file there.
"""

from __future__ import annotations

import io
import os

from etils import epath


def is_url(path: str | os.PathLike) -> bool:
    """True for `scheme://...` paths (gs://, s3://, ...), which must not go through os.path."""
    return "://" in os.fspath(path)


def resolve(workdir: str | os.PathLike) -> str:
    """An absolute local path, or the URL itself (without a trailing slash)."""
    workdir = os.fspath(workdir)
    if not workdir:
        raise ValueError("workdir is empty; pass a directory or a gs:// URL")
    if is_url(workdir):
        scheme, _, rest = workdir.partition("://")
        return f"{scheme}://{rest.rstrip('/')}"
    return os.path.abspath(os.path.expanduser(workdir))


def makedirs(path: str) -> None:
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def write_text(path: str, text: str) -> None:
    """Writes a whole text file (creating its directory)."""
    p = epath.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def write_npz(path: str, **arrays) -> None:
    """`numpy.savez` to any path (serialised in memory, then written in one piece)."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    p = epath.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(buffer.getvalue())


class JsonLines:
    """An append-only text file of lines: appended in place locally (line buffered); on object
    stores, which cannot append, kept in memory and the whole file rewritten on each write
    (what was there before this run, e.g. before a resume, is read first and kept)."""

    def __init__(self, path: str):
        self.path = path
        self._remote = is_url(path)
        makedirs(path.rsplit("/", 1)[0] if self._remote else os.path.dirname(path))
        if self._remote:
            p = epath.Path(path)
            self._text = p.read_text() if p.exists() else ""
            if self._text and not self._text.endswith("\n"):
                self._text += "\n"  # a line cut by a crash stays one bad line, not two
            self._file = None
        else:
            self._file = open(path, "a", buffering=1)  # noqa: SIM115  (closed in close())

    def write(self, line: str) -> None:
        if self._file is not None:
            self._file.write(line + "\n")
        else:
            self._text += line + "\n"
            epath.Path(self.path).write_text(self._text)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
