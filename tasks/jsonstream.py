"""Find JSON documents in a byte stream (pure): any layout, bounded memory, one verdict per document.

`documents(chunks)` reads an iterable of byte chunks and yields one `Found` per document: its
bytes (to parse with orjson) or why it was refused, with its first line and byte offset. It reads:

* documents one after another with any whitespace between and inside them (one per file, NDJSON,
  `jq .` output, `{...}{...}` on one line, daemon packets: the `{"format": "json", "version": 1}`
  header is just another document, left to the caller to recognise);
* a top-level array: each element is a document of its own (`context` "[]");
* `aws xray batch-get-traces` output: in a top-level object, the array under the key `"Traces"` is
  descended into and each `Trace` is a document (`context` "Traces[]"), so a page of any size
  streams; the rest of that object (`UnprocessedTraceIds`, `NextToken`) is skipped.

How, without a Python loop per byte. Fast path (top-level objects): the region up to the next
line that starts with `{` or `[` in column 0 (found by one regex search) is handed to orjson at
once; when it parses, it was exactly one document (NDJSON, daemon packets, `jq .` output), and its
parsed value travels with its bytes, so nothing is parsed twice. The depth limit is checked inside
that same parse (see `_parse_within_depth`). Otherwise (several documents on a line, arrays,
batch-get-traces pages, anything broken) a document's end is found by its brackets: one compiled
regex jumps over everything that is not a bracket (whole strings included, escapes honoured),
strings cut by a chunk end are finished with `bytes.find`, Python only sees brackets, and runs of
brackets are counted in bulk. At most one document is held (`max_bytes`); a longer one, or one
nested deeper than `max_depth`, is refused without being kept and the scan goes on to its end in
constant memory (its time grows with its brackets). Bytes JSON never allows outside a string
escape (controls other than whitespace, a raw newline inside a string) end a document at once.

Recovery: after a document that cannot be JSON (truncated, binary, mismatched brackets, over a
limit and never closed), reading resumes at the first line inside it that starts with `{` or `[` in
column 0 — where NDJSON lines, daemon packets and `jq .` documents start (a raw newline can never be
inside a JSON string) —, else after it. Text between documents that is not JSON is one refusal up
to the next such line. So a bad document costs one refusal, never one per line, and the rest of
the file is still read.

`inflate(chunks)` gunzips a stream (several members too) with a cap on the bytes it may produce
(gzip bombs); its error reaches `documents` as a `StreamError` and becomes a refusal at the point
reading stopped.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024  # the consumer's per-document limit (tasks.documents)
MAX_DEPTH = 512  # X-Ray documents nest a few dozen levels; below Python's recursion limit downstream
ORJSON_MAX_DEPTH = 1024  # orjson refuses deeper documents itself
MIN_INFLATE_CAP = 64 * 1024 * 1024  # a gzip stream may always inflate this far ...
MAX_INFLATE_RATIO = 200  # ... and beyond, to this many times its compressed bytes (JSON: ~5-50)
GZIP_MAGIC = b"\x1f\x8b"

_WS = re.compile(rb"[ \t\r\n]*")
_ELEMENT_GAP = re.compile(rb"[ \t\r\n,]*")
# Everything up to the next bracket, quote, backslash or forbidden byte, whole strings included.
_JUMP = re.compile(
    rb'(?:[^"{}\[\]\\\x00-\x08\x0b\x0c\x0e-\x1f]++|"[^"\\\x00-\x1f]*+(?:\\[^\x00-\x1f][^"\\\x00-\x1f]*+)*+")*+'
)
_OPEN_RUN = re.compile(rb"[\[{][\[{ \t\r\n]*")
_CLOSE_RUN = re.compile(rb"[\]}][\]} \t\r\n]*")
_RESTART = re.compile(rb"\n[{\[]")
_TRACES_KEY = re.compile(rb'"Traces"[ \t\r\n]*:[ \t\r\n]*\Z')
_SCALAR = re.compile(
    rb'(?:[^,\]"\x00-\x08\x0b\x0c\x0e-\x1f]++|"[^"\\\x00-\x1f]*+(?:\\[^\x00-\x1f][^"\\\x00-\x1f]*+)*+")*+'
)
_NOT_OPENING = bytes(b for b in range(256) if b not in b"{[")
_CLOSER = bytes.maketrans(b"[{", b"]}")
_DROP_WS = b" \t\r\n"
_INFLATE_STEP = 1024 * 1024
_SHOWN = 40  # bytes of refused text quoted in a reason


class StreamError(Exception):
    """The byte stream itself failed (bad or truncated gzip, inflating past its cap)."""


@dataclass(frozen=True, slots=True)
class Found:
    """One document: its bytes, or why it was refused (`data` is None then)."""

    line: int  # first line, 1-based
    offset: int  # byte offset of its first byte (in the decompressed stream)
    data: bytes | None
    problem: str | None = None
    context: str = ""  # "" top level, "[]" element of a top-level array, "Traces[]" a page's trace
    index: int = -1  # its position in that array
    value: Any = None  # the parsed document, when the reader parsed it already (the fast path)


class _Failed(Exception):
    """A document that cannot be JSON: `where` (absolute offset) is where that became certain."""

    def __init__(self, reason: str, where: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where


def _shown(data: bytes | bytearray) -> str:
    text = bytes(data[:_SHOWN])
    return repr(text) + ("…" if len(data) > _SHOWN else "")


class _Scanner:
    def __init__(self, chunks: Iterable[bytes], max_bytes: int, max_depth: int) -> None:
        self.chunks = iter(chunks)
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.buf = bytearray()
        self.base = 0  # absolute offset of buf[0]
        self.pos = 0  # index into buf
        self.keep = 0  # absolute offset before which bytes may be dropped
        self.eof = False
        self.stream_problem: str | None = None
        self.line = 1  # line number at absolute offset `line_at`
        self.line_at = 0

    # -- buffer -------------------------------------------------------------------------------
    def more(self) -> bool:
        """Append the next chunk (dropping bytes before `keep`); False at the end of the stream."""
        if self.eof:
            return False
        while True:
            try:
                chunk = next(self.chunks, None)
            except StreamError as error:
                self.stream_problem = str(error)
                chunk = None
            if chunk is None:
                self.eof = True
                return False
            if chunk:
                break
        drop = max(0, min(self.keep, self.base + self.pos) - self.base)
        if drop:
            self.line_number(self.base + drop)
            del self.buf[:drop]
            self.base += drop
            self.pos -= drop
        self.buf += chunk
        return True

    def line_number(self, offset: int) -> int:
        """Line of an absolute offset (still buffered, or past everything counted so far)."""
        if offset > self.line_at:
            self.line += self.buf.count(b"\n", self.line_at - self.base, offset - self.base)
        elif offset < self.line_at:
            self.line -= self.buf.count(b"\n", offset - self.base, self.line_at - self.base)
        self.line_at = offset
        return self.line

    def absolute(self) -> int:
        return self.base + self.pos

    def stream_note(self) -> str:
        """The stream's own problem, once (it explains why something was cut short)."""
        problem, self.stream_problem = self.stream_problem, None
        return problem or ""

    # -- top level ----------------------------------------------------------------------------
    def run(self) -> Iterator[Found]:
        while len(self.buf) < 3 and self.more():
            pass
        if self.buf.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
            self.pos = 3
        while True:
            self.keep = self.absolute()
            self.pos = _WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos >= len(self.buf):
                if self.more():
                    continue
                break
            first = self.buf[self.pos]
            if first == 0x7B:  # {
                found = self.fast()
                if found is not None:
                    yield found
                    continue
                yield from self.value("", -1)
            elif first == 0x5B:  # [
                yield from self.container("[]")
            else:
                yield from self.garbage()
        if self.stream_problem:
            at = self.absolute()
            yield Found(self.line_number(at), at, None, self.stream_note())

    def garbage(self) -> Iterator[Found]:
        """Text that is not a document: one refusal up to the next line starting with { or [."""
        start = self.absolute()
        line = self.line_number(start)
        while len(self.buf) - self.pos <= _SHOWN and self.buf.find(b"\n", self.pos) < 0 and self.more():
            pass
        first_line = self.buf[self.pos : self.pos + _SHOWN + 1].split(b"\n")[0]
        reason = f"not JSON: starts with {_shown(first_line)}"
        if not self.resync(start) and self.stream_problem:
            reason += f"; {self.stream_note()}"
        yield Found(line, start, None, reason)

    def resync(self, after: int) -> bool:
        """Move to the first line after absolute offset `after` that starts with { or [; False when
        the stream ended first (everything up to its end is then consumed)."""
        self.pos = after - self.base
        while True:
            found = _RESTART.search(self.buf, self.pos)
            if found:
                self.pos = found.start() + 1
                return True
            self.pos = max(self.pos, len(self.buf) - 1)  # a "\n" at the very end may pair with the next chunk
            self.keep = self.absolute()
            if not self.more():
                self.pos = len(self.buf)
                return False

    def fast(self) -> Found | None:
        """The optimistic path: a document that runs to the next line starting with { or [ (or
        to the end) is parsed by orjson at once — NDJSON, daemon packets, `jq .` output. None
        when that region is not one document within the limits (the scan then finds out why)."""
        start = self.absolute()
        self.keep = start
        search = start + 1
        while True:
            found = _RESTART.search(self.buf, search - self.base)
            if found:
                end = self.base + found.start()
                break
            if self.base + len(self.buf) - start > self.max_bytes:
                return None
            search = max(search, self.base + len(self.buf) - 1)
            if not self.more():
                end = self.base + len(self.buf)
                break
        if end - start > self.max_bytes:
            return None
        last = end - self.base
        while last > self.pos and self.buf[last - 1] in _DROP_WS:
            last -= 1
        with memoryview(self.buf) as view:  # one copy, not two
            data = bytes(view[self.pos : last])
        if b'"Traces"' in data:  # maybe a batch-get-traces page: its traces are read one by one
            return None
        try:
            value = _parse_within_depth(data, self.max_depth)
        except orjson.JSONDecodeError:
            return None
        self.pos = end - self.base
        return Found(self.line_number(start), start, data, None, "", -1, value)

    # -- arrays whose elements are documents ---------------------------------------------------
    def container(self, context: str) -> Generator[Found, None, bool]:
        """At `[`: each element is a document. Returns False when reading moved to a recovery point."""
        start = self.absolute()
        self.pos += 1
        index = 0
        while True:
            self.keep = self.absolute()
            self.pos = _ELEMENT_GAP.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos >= len(self.buf):
                if self.more():
                    continue
                at = self.absolute()
                reason = f"array starting at line {self.line_number(start)} is not closed at the end of the stream"
                if self.stream_problem:
                    reason += f" ({self.stream_note()})"
                yield Found(self.line_number(at), at, None, reason, context, index)
                return False
            first = self.buf[self.pos]
            if first == 0x5D:  # ]
                self.pos += 1
                return True
            if first in (0x7B, 0x5B):
                ok = yield from self.value(context, index)
            else:
                ok = yield from self.scalar(context, index)
            if not ok:
                return False
            index += 1

    def scalar(self, context: str, index: int) -> Generator[Found, None, bool]:
        """An array element that is no object or array: refused alone when it is a JSON scalar."""
        start = self.absolute()
        line = self.line_number(start)
        while True:
            end = _SCALAR.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            cut = end < len(self.buf) and self.buf[end] == 0x22  # a string the chunk cut
            if (end < len(self.buf) and not cut) or end - self.pos > self.max_bytes or not self.more():
                break
        text = bytes(self.buf[self.pos : end]).strip()
        if end < len(self.buf) and self.buf[end] in (0x2C, 0x5D) and end - self.pos <= self.max_bytes:
            self.pos = end
            yield Found(line, start, None, f"array element is not a JSON object: {_shown(text)}", context, index)
            return True
        yield from self.fail(_Failed("not an array element", self.base + end), start, line, True, context, index)
        return False

    # -- one document ---------------------------------------------------------------------------
    def value(self, context: str, index: int) -> Generator[Found, None, bool]:
        """At `{` or `[`: scan one document to its end and yield it (or its refusal). Returns False
        when it failed and reading moved to a recovery point."""
        start = self.absolute()
        line = self.line_number(start)
        self.keep = start
        doomed: str | None = None
        retained = True
        page = False  # a batch-get-traces page: its Traces were yielded, the rest is skipped
        stack = bytearray()  # the open brackets, up to max_depth of them
        depth = 0
        in_string = False
        checked = start + 1  # restart lines were looked for from here (doomed documents)
        try:
            while True:
                buf = self.buf
                if in_string:  # memchr to the next quote; escapes counted, raw newlines refused
                    quote = buf.find(b'"', self.pos)
                    stop = len(buf) if quote < 0 else quote
                    newline = buf.find(b"\n", self.pos, stop)
                    if newline >= 0:
                        raise _Failed("byte b'\\n' inside a string", self.base + newline)
                    slashes = stop
                    while slashes > self.pos and buf[slashes - 1] == 0x5C:
                        slashes -= 1
                    if quote < 0:  # used up: keep a trailing run of backslashes for the next chunk
                        self.pos = slashes
                    elif (quote - slashes) % 2:  # an escaped quote
                        self.pos = quote + 1
                        continue
                    else:
                        in_string = False
                        self.pos = quote + 1
                        continue
                else:
                    end = _JUMP.match(buf, self.pos).end()  # type: ignore[union-attr]
                    self.pos = end
                    if end < len(buf):
                        byte = buf[end]
                        if byte == 0x22:  # a string the chunk cut
                            in_string = True
                            self.pos = end + 1
                            continue
                        if byte in (0x7B, 0x5B):
                            if (
                                byte == 0x5B
                                and depth == 1
                                and context == ""
                                and not page
                                and retained
                                and stack == b"{"
                                and _TRACES_KEY.search(buf, max(0, end - 64), end)
                            ):
                                page = True
                                retained = False
                                ok = yield from self.container("Traces[]")
                                if not ok:
                                    return False
                                continue
                            run = _OPEN_RUN.match(buf, end).group()  # type: ignore[union-attr]
                            opened = run.translate(None, _DROP_WS)
                            depth += len(opened)
                            stack += opened[: max(0, self.max_depth - len(stack))]
                            if depth > self.max_depth and doomed is None:
                                doomed = f"nested deeper than {self.max_depth} levels (the import limit)"
                            self.pos = end + len(run)
                            continue
                        if byte in (0x7D, 0x5D):
                            run = _CLOSE_RUN.match(buf, end).group().rstrip(_DROP_WS)  # type: ignore[union-attr]
                            closed = run.translate(None, _DROP_WS)
                            if len(closed) > depth:  # the document ends inside this run
                                run = self._cut(run, depth)
                                closed = closed[:depth]
                            over = depth - len(stack)  # innermost levels past max_depth: counted only
                            checked_n = max(0, len(closed) - over)
                            if checked_n:
                                expected = bytes(stack[len(stack) - checked_n :])[::-1].translate(_CLOSER)
                                if expected != closed[len(closed) - checked_n :]:
                                    raise _Failed("brackets do not match", self.base + end)
                                del stack[len(stack) - checked_n :]
                            depth -= len(closed)
                            self.pos = end + len(run)
                            if depth == 0:
                                break
                            continue
                        raise _Failed(f"byte {bytes([byte])!r} outside a string", self.base + end)
                # the buffer is used up: check the limits, then read more
                if not page and doomed is None and self.absolute() - start > self.max_bytes:
                    doomed = f"larger than {self.max_bytes:,} bytes (the import limit per document)"
                if doomed is not None and not page:  # it holds the start of another document: cut there
                    restart = _RESTART.search(self.buf, max(checked, self.base) - self.base)
                    if restart:
                        raise _Failed("cut", self.base + restart.start() + 1)
                    checked = max(checked, self.base + len(self.buf) - 1)
                if doomed is not None or page:
                    retained = False
                    self.keep = min(self.absolute(), checked)
                if not self.more():
                    raise _Failed("eof", self.absolute())
        except _Failed as failure:
            reason = failure.reason
            if reason == "eof":
                note = self.stream_note()
                reason = f"not closed: {note}" if note else "not closed at the end of the stream (truncated?)"
            elif reason == "cut":
                reason = "not closed before the next document"
            else:
                reason = f"not JSON: {reason} at line {self.line_number(failure.where)}"
            if doomed is not None:
                reason = f"{doomed}; {reason}"
            yield from self.fail(failure, start, line, retained, context, index, reason)
            return False
        if page:
            return True
        size = self.absolute() - start
        if doomed is None and size > self.max_bytes:
            doomed = f"larger than {self.max_bytes:,} bytes (the import limit per document)"
        data = bytes(self.buf[start - self.base : self.pos]) if doomed is None else None
        yield Found(line, start, data, doomed, context, index)
        return True

    @staticmethod
    def _cut(run: bytes, depth: int) -> bytes:
        """The prefix of a closing run that holds its first `depth` brackets."""
        seen = 0
        for number, byte in enumerate(run):
            if byte in (0x5D, 0x7D):
                seen += 1
                if seen == depth:
                    return run[: number + 1]
        return run

    def fail(
        self,
        failure: _Failed,
        start: int,
        line: int,
        retained: bool,
        context: str,
        index: int,
        reason: str | None = None,
    ) -> Iterator[Found]:
        """Refuse the document that starts at `start`; resume at the first line inside it that starts
        with { or [ when its bytes are still here, else at the point of failure."""
        if retained and start >= self.base:
            restart = _RESTART.search(self.buf, start + 1 - self.base, failure.where - self.base)
            if restart and not (reason or "").startswith(("larger", "nested")):
                next_line = self.line_number(self.base + restart.start() + 1)
                reason = f"not closed before line {next_line}, where a new document starts"
        yield Found(line, start, None, reason or failure.reason, context, index)
        if retained and start >= self.base:
            self.resync(start + 1)
            return
        where = failure.where - self.base
        if where >= len(self.buf):
            self.pos = len(self.buf)
        elif self.buf[where - 1 : where] == b"\n" and self.buf[where : where + 1] in (b"{", b"["):
            self.pos = where
        else:
            self.resync(failure.where)


def _parse_within_depth(data: bytes, limit: int) -> Any:
    """orjson.loads, refusing (JSONDecodeError) a document nested deeper than `limit`: orjson
    itself stops at 1024 levels, so a document with more than `limit` opening brackets is parsed
    inside 1024 - limit extra arrays — the depth is checked in the same pass as the parse."""
    if len(data) <= 2 * limit or len(data.translate(None, _NOT_OPENING)) <= limit:
        return orjson.loads(data)
    extra = max(0, ORJSON_MAX_DEPTH - limit)
    value = orjson.loads(b"[" * extra + data + b"]" * extra)
    for _ in range(extra):
        value = value[0]
    return value


def documents(
    chunks: Iterable[bytes], *, max_bytes: int = MAX_DOCUMENT_BYTES, max_depth: int = MAX_DEPTH
) -> Iterator[Found]:
    """The documents of a byte stream (see the module doc); a `StreamError` raised by `chunks`
    ends the stream and is reported where reading stopped."""
    return _Scanner(chunks, max_bytes, max_depth).run()


def inflate(
    chunks: Iterable[bytes], *, min_cap: int = MIN_INFLATE_CAP, max_ratio: int = MAX_INFLATE_RATIO
) -> Iterator[bytes]:
    """Gunzip a stream of gzip members chunk by chunk. Raises `StreamError` when the data is not
    gzip, is cut short, or inflates past max(min_cap, max_ratio × the compressed bytes read)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    started = False  # the current member has had input
    read = produced = 0
    for chunk in chunks:
        read += len(chunk)
        pending = chunk
        while pending:
            started = True
            try:
                out = inflater.decompress(pending, _INFLATE_STEP)
            except zlib.error as error:
                raise StreamError(f"bad gzip data within the first {read:,} compressed bytes: {error}") from None
            produced += len(out)
            if produced > max(min_cap, max_ratio * read):
                raise StreamError(
                    f"gzip stream inflates past {produced:,} bytes from {read:,} compressed bytes "
                    f"(the cap is {max_ratio}x the compressed size, at least {min_cap:,} bytes): reading stopped"
                )
            if out:
                yield out
            if inflater.eof:  # another member may follow
                pending = inflater.unused_data
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                started = False
            else:
                pending = inflater.unconsumed_tail
    if started and not inflater.eof:
        raise StreamError(f"gzip stream truncated after {read:,} compressed bytes")
