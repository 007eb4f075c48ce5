"""A local temporary file that hashes what is written to it: every put goes through one."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from types import TracebackType
from typing import Self

from modelyard.artifacts.refs import Digest


class Spool:
    """A write-only temporary file that computes the SHA-256 and size of its content.

    Used as a context manager: on exit the temporary file is removed unless it has been
    moved away (published) in the meantime, so an exception never leaves a file behind.
    It has the file-like surface (``write``, ``tell``, ``flush``) that pyarrow writers need.

    Args:
        directory: Where to create the file; ``None`` for the system temporary folder.
            A local store passes a folder inside its root so publishing is one
            ``os.replace`` on the same filesystem.
    """

    def __init__(self, directory: str | None = None) -> None:
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
        fd, self.path = tempfile.mkstemp(prefix=".spool-", suffix=".tmp", dir=directory)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    @property
    def closed(self) -> bool:
        """Whether :meth:`seal` (or :meth:`discard`) has run."""
        return self._file.closed

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``, hashing it on the way."""
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self._file.write(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        """Bytes written so far."""
        return self.size

    def flush(self) -> None:
        """Flush Python's buffer to the OS."""
        self._file.flush()

    def seal(self) -> Digest:
        """Flush, fsync and close the file; return the ``sha256:`` digest of its content."""
        if not self._file.closed:
            self._file.flush()
            # Durable before it is renamed into place: a crash must not publish an empty file.
            os.fsync(self._file.fileno())
            self._file.close()
        return f"sha256:{self._hash.hexdigest()}"

    def discard(self) -> None:
        """Close and delete the file if it is still there."""
        self._file.close()
        with contextlib.suppress(FileNotFoundError):  # published (moved away) already
            os.unlink(self.path)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()
