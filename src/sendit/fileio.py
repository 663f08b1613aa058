"""Files as sendit meets them: what kind of file a path the user names is (a file, a pipe, a device), what its
bytes are (gzip, bz2 and xz are undone; zip, zstd, 7z and Parquet are named), text that will not decode, where a
write really goes (through a symbolic link), and the "disk full" and "file too large" errors that libraries
(safetensors, torch, tokenizers) wrap in their own exception types.

A leaf: standard library only, so the config reader, the data readers and the report can all use it. The caller
passes the exception type its messages are (`ConfigError`, `DataError`), which keeps its exit code.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import lzma
import os
import resource
import select
import stat
from pathlib import Path
from typing import BinaryIO

# How long a named pipe (FIFO) may stay silent before sendit says that nothing writes to it. A pipe from process
# substitution, <(zcat tweets.csv.gz), has its writer already; a FIFO nobody opened for writing would block for ever.
FIFO_WAIT_S = 10.0

# The first bytes of the compressed and binary formats people hand over under a .csv, .yaml or .jsonl name.
MAGIC = (
    (b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"), (b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"),
    (b"\x28\xb5\x2f\xfd", "zstd"), (b"7z\xbc\xaf\x27\x1c", "7z"), (b"PAR1", "parquet"),
)
_OPENERS = {"gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"), "bz2": bz2.BZ2File, "xz": lzma.LZMAFile}
_HOW = {
    "gzip": "gzip-compressed; decompress it first (gunzip FILE)",
    "bz2": "bz2-compressed; decompress it first (bunzip2 FILE)",
    "xz": "xz-compressed; decompress it first (unxz FILE)",
    "zip": "a zip archive (an Excel .xlsx workbook is one too); unzip it (unzip FILE) and pass the CSV inside, or "
           "save the sheet as CSV",
    "zstd": "zstd-compressed; decompress it first (zstd -d FILE) and pass the result",
    "7z": "a 7-Zip archive; extract it first (7z x FILE) and pass the file inside",
    "parquet": "a Parquet file; give it a .parquet name so that it is read as one",
}


def kind_of(head: bytes) -> str | None:
    """'gzip', 'bz2', 'xz', 'zip', 'zstd', '7z' or 'parquet' when the bytes start like that format, else None."""
    return next((kind for magic, kind in MAGIC if head.startswith(magic)), None)


def open_input(path: str | Path, where: str, error: type[Exception], decompress: bool = True) -> BinaryIO:
    """A readable binary stream of what `path` holds, or `error` with one paragraph saying why there is none.

    A regular file, a named pipe or a process substitution (`/dev/fd/63`: a pipe), or a terminal that is this
    process's stdin. A FIFO nothing writes to is given up on after FIFO_WAIT_S seconds instead of hanging; a device
    (/dev/zero, /dev/urandom, a disk) or a socket is refused, since reading it never ends or gives noise. gzip,
    bz2 and xz are decompressed (`decompress`); zip, zstd and 7z archives are refused, naming what they are.
    `where` names the input in messages: "--data 'x.csv'"."""
    st = os.stat(path)  # follows links; FileNotFoundError, PermissionError, ELOOP: the caller's OSError message
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise error(f"{where} is a folder; pass a file.")
    if stat.S_ISFIFO(mode):
        stream = _open_fifo(path, where, error)
    elif stat.S_ISREG(mode) or (stat.S_ISCHR(mode) and _is_stdin(st)):
        stream = open(path, "rb")
    else:
        what = ("a character device" if stat.S_ISCHR(mode) else "a block device (a disk)" if stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise error(f"{where} is {what}, not a file: reading it would never end, or give noise. Pass a file, "
                    f"or a pipe such as <(zcat FILE.gz).")
    return uncompressed(stream, where, error) if decompress else stream


def _is_stdin(st: os.stat_result) -> bool:
    """Whether a character device is this process's stdin (/dev/stdin on a terminal): readable until Ctrl-D."""
    try:
        return os.path.samestat(st, os.fstat(0))
    except OSError:
        return False


def _open_fifo(path: str | Path, where: str, error: type[Exception]) -> BinaryIO:
    # Opening a FIFO for reading blocks until a writer opens it; O_NONBLOCK returns at once, and poll waits, with
    # a limit, for the first bytes (or the end, when a writer came and went).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        if not poller.poll(FIFO_WAIT_S * 1000):
            raise error(f"{where} is a named pipe (FIFO) and nothing wrote to it within {FIFO_WAIT_S:g} s. Start "
                        f"the program that writes it first (or in the same command line: cmd > FIFO & sendit ...), "
                        f"or pass a regular file.")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def uncompressed(stream: BinaryIO, where: str, error: type[Exception], close: bool = True) -> BinaryIO:
    """`stream` with gzip/bz2/xz undone (found by their first bytes, whatever the name says); zip, zstd and 7z
    are an `error` that names the format and the command that unpacks it. Closing the result closes `stream`
    unless `close` is False (stdin stays open for the caller)."""
    head = _read_up_to(stream, 8)
    whole = _Prefixed(head, stream, close)
    kind = kind_of(head)
    if kind in _OPENERS:
        return io.BufferedReader(_Checked(_OPENERS[kind](whole), whole, where, kind, error))
    if kind in ("zip", "zstd", "7z"):
        whole.close()
        raise error(f"{where} is {_HOW[kind]}.")
    return io.BufferedReader(whole)


def format_problem(head: bytes) -> str | None:
    """Why bytes that should be text are not: 'a Parquet file; ...', or None (used for what a text reader got)."""
    kind = kind_of(head)
    return _HOW.get(kind) if kind else None


def read_all(path: str | Path, where: str, error: type[Exception]) -> bytes:
    """Every byte `path` holds, decompressed (see open_input)."""
    with open_input(path, where, error) as f:
        return f.read()


def decode_text(raw: bytes, where: str, error: type[Exception], what: str = "a text file") -> str:
    """UTF-8 text (a byte-order mark dropped), or `error` naming the file, the line and why: binary (NUL bytes,
    a known format) or another encoding."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    problem = format_problem(raw)
    if problem:
        raise error(f"{where} is {problem}; it should be {what}.")
    if b"\x00" in raw[:8192] and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise error(f"{where}, line {line}: the file holds NUL bytes, so it is binary (not {what}). Pass the "
                    f"right file, or re-save it as UTF-8 text.")
    try:
        return raw.decode("utf-16") if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise error(f"{where}, line {line}: byte {raw[e.start:e.start + 1]!r} is not UTF-8, so this is binary "
                    f"or in another encoding (not {what}). Re-save it as UTF-8 (iconv -f latin1 -t utf-8 in > out), "
                    f"or pass the right file.") from None


def read_text_file(path: str | Path, where: str, error: type[Exception], what: str = "a text file") -> str:
    """A UTF-8 text file (a config, a manifest) read whole, or `error` with one paragraph (see decode_text):
    a compressed one is named, not decompressed."""
    with open_input(path, where, error, decompress=False) as f:
        return decode_text(f.read(), where, error, what)


def _read_up_to(stream: BinaryIO, n: int) -> bytes:
    head = b""
    while len(head) < n:
        more = stream.read(n - len(head))
        if not more:
            break
        head += more
    return head


class _Prefixed(io.RawIOBase):
    """The bytes already read from a stream (to look at its format), then the rest of it: pipes cannot seek."""

    def __init__(self, head: bytes, rest: BinaryIO, close: bool = True):
        self.head, self.rest, self.close_rest = head, rest, close

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.rest.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.close_rest and not self.closed:
            self.rest.close()
        super().close()


class _Checked(io.RawIOBase):
    """A decompressing stream whose errors (a truncated or damaged archive) are one paragraph."""

    def __init__(self, inner: BinaryIO, under: BinaryIO, where: str, kind: str, error: type[Exception]):
        self.inner, self.under, self.where, self.kind, self.error = inner, under, where, kind, error

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            data = self.inner.read(len(b))
        except Exception as e:  # zlib.error, lzma.LZMAError, EOFError, BadGzipFile: what each format raises
            if isinstance(e, OSError) and e.errno is not None:
                raise  # a read error of the file itself, not of its contents
            raise self.error(f"{self.where} is {self.kind}-compressed but damaged or cut short ({e}). Download or "
                             f"copy it again, or decompress it yourself to see how much is left.") from None
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.inner.close()
            self.under.close()
        super().close()


# ---------------------------------------------------------------------------------------------------- writing
def write_target(path: str | Path) -> Path:
    """Where writing `path` lands: a symbolic link is written through (its target is replaced, beside the target),
    as `>` in a shell does, instead of the link being replaced by a file."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


# The errno of a write that ran out of room, and what libraries that do their own I/O put in their messages.
WRITE_FULL = {
    errno.ENOSPC: ("No space left on device", "os error 28", "StorageFull"),
    errno.EDQUOT: ("Disk quota exceeded", "os error 122", "QuotaExceeded"),
    errno.EFBIG: ("File too large", "os error 27", "FileTooLarge"),
}


def as_write_error(e: BaseException, filename: str | Path | None = None) -> OSError | None:
    """The OSError (ENOSPC, EDQUOT, EFBIG) inside a library's exception that a full disk, a quota or the file-size
    limit (ulimit -f) raised while writing, or None for any other exception. safetensors and tokenizers wrap the
    OS error in their own types; torch.save says only "file write failed" or "unexpected pos"."""
    if isinstance(e, OSError):
        if e.errno not in WRITE_FULL:
            return None
        return e if e.filename or filename is None else OSError(e.errno, e.strerror, str(filename))
    text = str(e)
    code = next((code for code, marks in WRITE_FULL.items() if any(m in text for m in marks)), None)
    if code is None and ("file write failed" in text or "unexpected pos" in text):
        code = errno.EFBIG if file_size_limit() is not None else errno.ENOSPC
    if code is None:
        return None
    return OSError(code, os.strerror(code), None if filename is None else str(filename))


def file_size_limit() -> int | None:
    """The process's file-size limit in bytes (ulimit -f), or None when there is none."""
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def write_hint(e: OSError) -> str:
    """What to do about a write that ran out of room, for the end of a message ('' for other errors)."""
    if e.errno == errno.EFBIG:
        limit = file_size_limit()
        now = f", now {limit:,} bytes" if limit is not None else ""
        return (f"; a file reached the file-size limit (ulimit -f{now}): raise it (ulimit -f unlimited) or write "
                f"to where no limit applies")
    if e.errno == errno.EDQUOT:
        return "; your disk quota is used up: free some space (or pass an --out on another disk)"
    if e.errno == errno.ENOSPC:
        return "; free some space (or pass an --out on another disk)"
    return ""

