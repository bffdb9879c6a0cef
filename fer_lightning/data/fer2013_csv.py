"""Fast, fully validating parser for the FER2013 csv (plain or gzip), with an on-disk array cache.

The file has a header ``emotion,pixels,Usage`` (any column order) and one row per image: the
label 0..6, 2,304 space-separated grey levels and the split name. Pixels are converted by a
vectorised numpy digit parser over blocks of rows; gzip input is decompressed in a background thread
so that inflating and parsing overlap. Every rule is still checked: when a block fails a check, its
rows are re-validated one by one in plain Python to report the first bad line exactly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import stat
import threading
import zipfile
import zlib
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fer_lightning.classes import IMAGE_SIZE, NUM_CLASSES
from fer_lightning.errors import DataFormatError, FERUserError
from fer_lightning.files import remove_stale_temp_files, write_atomically

log = logging.getLogger(__name__)

SPLITS: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
COLUMNS: tuple[str, ...] = ("emotion", "pixels", "Usage")
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
CACHE_FORMAT_VERSION = 1
_CACHE_SUFFIX = ".npz"

_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
_READ_SIZE = 1 << 18  # compressed bytes per read
_BLOCK_SIZE = 1 << 21  # decompressed bytes per parsed block (~240 rows, fits in L2 cache)
_PAD = b"   "  # leading spaces so that shifted views never run off the start of a block
_EMOTION_CODES = {str(label).encode(): label for label in range(NUM_CLASSES)}
_USAGE_CODES = {usage.encode(): code for code, usage in enumerate(SPLITS)}


@dataclass(frozen=True)
class SplitArrays:
    """Images and labels of one split."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64


def load_fer2013_csv(
    path: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> dict[str, SplitArrays]:
    """Parse and validate a FER2013 csv (``.csv`` or gzip) into ``{"train", "val", "test"}`` arrays.

    With ``cache_dir``, the arrays are stored there as an uncompressed ``.npz`` keyed by the csv's
    resolved path and its inode's identity and change time (``st_ctime_ns``, which every rewrite
    sets and no copy tool can restore), so later calls skip parsing and a csv replaced in place
    (even by ``cp -p``) is parsed again; a broken cache file is rebuilt.
    Splits whose rows are contiguous in the file are views of one shared image buffer.
    """
    if not os.fspath(path).strip():
        raise FERUserError(
            "the FER2013 csv path is empty (data.csv_path, or an env FER2013_CSV set to nothing); "
            + _WHERE_DATA_COMES_FROM
        )
    path = Path(os.path.expanduser(os.fspath(path)))
    if not path.is_file():
        raise FERUserError(_missing_file_message(path))
    if cache_dir is None:
        return _parse_csv(path)
    cache_file = _cache_file(path, Path(os.path.expanduser(os.fspath(cache_dir))))
    cached = _read_cache(cache_file)
    if cached is not None:
        return cached
    splits = _parse_csv(path)
    _write_cache(cache_file, splits)
    return splits


_WHERE_DATA_COMES_FROM = (
    "Get fer2013.csv from Kaggle's 'Challenges in Representation Learning: Facial Expression "
    "Recognition Challenge' and name it with data.csv_path=... (data=fer2013 also reads the "
    "env FER2013_CSV); without it, training runs on built-in synthetic faces (data=synthetic)"
)


def _missing_file_message(path: Path) -> str:
    """Why ``path``, which is not a regular file, cannot be read: the reason the system gives."""
    try:
        mode = path.stat().st_mode
    except OSError as err:  # missing, a symlink loop, no permission to look
        missing = isinstance(err, FileNotFoundError)
        what = "does not exist" if missing else f"cannot be read ({err.strerror})"
    else:
        what = (
            "is a directory, not a file"
            if stat.S_ISDIR(mode)
            else (f"is a {_file_kind(mode)}, not a regular file")
        )
    return f"FER2013 csv {str(path)!r} {what}. {_WHERE_DATA_COMES_FROM}"


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_ISFIFO: "named pipe (FIFO)",
        stat.S_ISSOCK: "socket",
        stat.S_ISCHR: "character device",
        stat.S_ISBLK: "block device",
    }
    return next((kind for test, kind in kinds.items() if test(mode)), "special file")


def _show(raw: bytes | memoryview, limit: int = 40) -> str:
    """Quote a (possibly binary) field value for an error message, truncated to about ``limit``."""
    text = bytes(raw).decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _show_names(names: list[str], limit: int = 3) -> str:
    """Quote the first ``limit`` column names, each truncated (binary junk makes huge ones)."""
    shown = [_show(name.encode(), 20) for name in names[:limit]]
    if len(names) > limit:
        shown.append(f"... {len(names) - limit} more")
    return f"[{', '.join(shown)}]"


# ----------------------------------------------------------------------------------- reading bytes


def _file_chunks(path: Path) -> Generator[bytes, None, None]:
    """Yield the file's (decompressed) bytes in blocks; gzip is detected by its magic bytes."""
    with path.open("rb") as file:
        is_gzip = file.read(2) == _GZIP_MAGIC
        file.seek(0)
        if not is_gzip:
            while chunk := file.read(_BLOCK_SIZE):
                yield chunk
            return
        try:
            yield from _gunzip_chunks(file)
        except (EOFError, zlib.error) as exc:
            raise DataFormatError(f"{path}: corrupt or truncated gzip file ({exc})") from exc


def _gunzip_chunks(file: BinaryIO) -> Iterator[bytes]:
    """Inflate a (possibly multi-member) gzip stream; raise EOFError when it is truncated."""
    inflater = zlib.decompressobj(wbits=31)
    pending = b""
    while pending or (pending := file.read(_READ_SIZE)):
        if inflater.eof:  # another member follows; zero padding is skipped, as gzip does
            pending = pending.lstrip(b"\0")
            if not pending:
                continue
            inflater = zlib.decompressobj(wbits=31)
        if out := inflater.decompress(pending, _BLOCK_SIZE):
            yield out
        pending = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    if out := inflater.flush():
        yield out
    if not inflater.eof:
        raise EOFError("compressed file ended before the end-of-stream marker was reached")


def _prefetched(chunks: Generator[bytes, None, None], depth: int = 4) -> Iterator[bytes]:
    """Run ``chunks`` in a background thread (zlib releases the GIL) to overlap reading/parsing."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not offer(chunk):
                    return
            offer(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            offer(exc)
        finally:
            chunks.close()

    worker = threading.Thread(target=produce, name="fer2013-reader", daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _line_blocks(path: Path) -> Iterator[bytes]:
    """Yield blocks of whole lines (each ending in ``\\n``), without the UTF-8 BOM."""
    pending: list[bytes] = []  # pieces of an unfinished line, joined once it ends
    first = True
    for chunk in _prefetched(_file_chunks(path)):
        if first:
            chunk = chunk.removeprefix(_UTF8_BOM)
            first = False
        cut = chunk.rfind(b"\n") + 1
        if cut:
            yield b"".join([*pending, chunk[:cut]])
            pending = []
        pending.append(chunk[cut:])
    if any(pending):
        yield b"".join([*pending, b"\n"])


# --------------------------------------------------------------------------------------- parsing


def _parse_header(line: bytes, path: Path) -> tuple[int, int, int]:
    """Return the column indices of emotion, pixels and Usage."""
    if b"\0" in line:
        raise DataFormatError(
            f"{path}:1: header holds NUL bytes, a binary file, is this a csv? (got {_show(line)})"
        )
    try:
        names = line.rstrip(b"\r").decode("utf-8").split(",")
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            f"{path}:1: header is not UTF-8 text, is this a csv? ({exc})"
        ) from exc
    missing = [name for name in COLUMNS if name not in names]
    unexpected = [name for name in names if name not in COLUMNS]
    if missing or unexpected or len(names) != len(COLUMNS):
        problems = [f"missing {missing}"] if missing else []
        problems += [f"unexpected {_show_names(unexpected)}"] if unexpected else []
        problems += [] if problems else ["duplicated columns"]
        raise DataFormatError(
            f"{path}:1: header: expected the columns emotion, pixels, Usage; "
            f"{', '.join(problems)} (got {_show(line)})"
        )
    return names.index("emotion"), names.index("pixels"), names.index("Usage")


def _line_error(line: bytes, columns: tuple[int, int, int]) -> str | None:
    """Check one data line (without its line end) in plain Python; describe the first problem."""
    fields = line.split(b",")
    if len(fields) != len(COLUMNS):
        return (
            f"row: expected {len(COLUMNS)} comma-separated fields, got {len(fields)} "
            f"(got {_show(line)})"
        )
    emotion, pixels, usage = (fields[index] for index in columns)
    if emotion not in _EMOTION_CODES:
        return f"field 'emotion': not an integer 0..{NUM_CLASSES - 1} (got {_show(emotion)})"
    if usage not in _USAGE_CODES:
        return f"field 'Usage': not one of {', '.join(SPLITS)} (got {_show(usage)})"
    values = pixels.split(b" ")
    for position, value in enumerate(values, start=1):
        if not (value.isdigit() and len(value) <= 3 and int(value) <= 255):
            return (
                f"field 'pixels': value #{position} is not an integer 0..255 separated by single "
                f"spaces (got {_show(value)})"
            )
    if len(values) != NUM_PIXELS:
        return (
            f"field 'pixels': expected {NUM_PIXELS} values, got {len(values)} (got {_show(pixels)})"
        )
    return None


class _PixelParser:
    """Vectorised parser of pixel fields that reuses its scratch arrays from block to block.

    The fields of a block are joined with single spaces (plus a trailing one) so that every value
    ends at a space. A value's last digit, tens and hundreds then sit at fixed offsets before that
    space, so shifted array views compute every number at once; only the final gather depends on
    where the spaces are. The checks together are exact: only digits and spaces, no empty value, at
    most three digits, values <= 255 and exactly 2,304 values per row. Scratch arrays are kept
    because freshly allocated large arrays cost page faults on every block.
    """

    def __init__(self) -> None:
        self._capacity = 0

    def _reserve(self, size: int) -> None:
        if size <= self._capacity:
            return
        self._capacity = size + size // 4
        self._is_space = np.empty(self._capacity, dtype=bool)
        self._is_digit = np.empty(self._capacity, dtype=bool)
        self._flags = np.empty(self._capacity, dtype=bool)
        self._shifted = np.empty(self._capacity, dtype=np.uint8)
        self._digits = np.empty(self._capacity, dtype=np.uint16)
        self._wide_flags = np.empty(self._capacity, dtype=np.uint16)
        self._numbers = np.empty(self._capacity, dtype=np.uint16)
        self._values = np.empty(self._capacity // 2, dtype=np.uint16)  # values have >= 2 bytes

    def parse(self, fields: list[memoryview], lengths: list[int], out: np.ndarray) -> bool:
        """Write the pixels of ``fields`` into ``out`` (rows, 2304); False if a field is invalid."""
        rows = len(fields)
        chars = np.frombuffer(b" ".join([_PAD, *fields, b""]), dtype=np.uint8)
        size = chars.size
        first = len(_PAD) + 1  # offset of the first field; all bytes before it are spaces
        self._reserve(size)
        is_space = np.equal(chars, ord(" "), out=self._is_space[:size])
        shifted = np.subtract(chars, ord("0"), out=self._shifted[:size])
        is_digit = np.less(shifted, 10, out=self._is_digit[:size])
        num_spaces = np.count_nonzero(is_space)
        if num_spaces != rows * NUM_PIXELS + first:
            return False
        if num_spaces + np.count_nonzero(is_digit) != size:
            return False
        double_space = np.logical_and(
            is_space[first - 1 : -1], is_space[first:], out=self._flags[first:size]
        )
        if double_space.any():
            return False
        four_digits = np.logical_and(is_digit[3:], is_digit[2:-1], out=self._flags[3:size])
        four_digits &= is_digit[1:-2]
        four_digits &= is_digit[:-3]
        if four_digits.any():
            return False
        value_ends = np.flatnonzero(is_space)[first:]
        row_ends = np.cumsum(lengths) + np.arange(first, first + rows)
        if not np.array_equal(value_ends[NUM_PIXELS - 1 :: NUM_PIXELS], row_ends):
            return False
        # same-dtype, non-overlapping operands keep numpy on its fast unbuffered loops
        digits = self._digits[:size]
        np.copyto(digits, chars)
        digits &= 0x0F  # digit values, 0 for spaces
        has_hundreds = self._wide_flags[:size]
        np.copyto(has_hundreds, is_digit)
        # numbers[p] is the value that ends at the space p: hundreds only when p - 2 is a digit
        numbers = np.multiply(digits[:-3], has_hundreds[1:-2], out=self._numbers[3:size])
        numbers *= 10
        numbers += digits[1:-2]
        numbers *= 10
        numbers += digits[2:-1]
        values = self._numbers[:size].take(value_ends, out=self._values[: value_ends.size])
        if values.max() > 255:
            return False
        np.copyto(out, values.reshape(rows, NUM_PIXELS), casting="unsafe")
        return True


def _parse_csv(path: Path) -> dict[str, SplitArrays]:
    """Stream the file block by block; see the module docstring."""
    with closing(_line_blocks(path)) as blocks:  # stops the reader thread early on an error
        first = next(blocks, b"")
        if not first.strip():
            raise DataFormatError(
                f"{path}: file is empty (expected the header '{','.join(COLUMNS)}')"
            )
        header_end = first.index(b"\n")
        parser = _RowParser(path, _parse_header(first[:header_end], path), _row_bound(path))
        parser.feed(first, header_end + 1)
        for block in blocks:
            parser.feed(block, 0)
    return parser.splits()


def _row_bound(path: Path) -> int:
    """At most this many rows fit in the file, from its (decompressed) size: a valid row has at
    least 4,619 bytes. For gzip the size is the trailer's ISIZE, exact for one member under 4 GiB;
    a wrong guess only costs a reallocation."""
    size = path.stat().st_size
    with path.open("rb") as file:
        if file.read(2) == _GZIP_MAGIC and size >= 18:
            file.seek(-4, os.SEEK_END)
            size = int.from_bytes(file.read(4), "little")
    min_row_bytes = len("0,,Training\n") + 2 * NUM_PIXELS - 1
    return size // min_row_bytes + 1


class _RowParser:
    """Accumulates labels, splits and images of the data lines fed to it, in file order.

    Images go straight into one buffer sized from the file (untouched capacity costs no memory);
    splits are returned as views of it when their rows are contiguous, as in FER2013. Fresh large
    arrays are expensive here: first-touching memory costs more than parsing into it.
    """

    def __init__(self, path: Path, columns: tuple[int, int, int], row_bound: int) -> None:
        self.path = path
        self.columns = columns
        self.line_number = 1  # the header
        self.images = np.empty((row_bound, NUM_PIXELS), dtype=np.uint8)
        self.num_rows = 0
        self.labels: list[int] = []
        self.usages: list[int] = []
        self.pixel_parser = _PixelParser()

    def feed(self, block: bytes, start: int) -> None:
        """Parse the whole lines of ``block`` from offset ``start`` on."""
        emotion_column, pixels_column, usage_column = self.columns
        view = memoryview(block)
        pixel_fields: list[memoryview] = []
        pixel_lengths: list[int] = []
        line_spans: list[tuple[int, int, int]] = []
        find = block.find
        while start < len(block):
            newline = find(b"\n", start)
            self.line_number += 1
            end = newline - 1 if newline > start and block[newline - 1] == ord("\r") else newline
            if end == start:  # blank line, skipped like pandas does
                start = newline + 1
                continue
            first_comma = find(b",", start, end)
            second_comma = find(b",", first_comma + 1, end) if first_comma >= 0 else -1
            bounds = (
                (start, first_comma),
                (first_comma + 1, second_comma),
                (second_comma + 1, end),
            )
            emotion = _EMOTION_CODES.get(block[slice(*bounds[emotion_column])])
            usage = _USAGE_CODES.get(block[slice(*bounds[usage_column])])
            if second_comma < 0 or emotion is None or usage is None:
                raise self._first_error([(self.line_number, block[start:end])])
            self.labels.append(emotion)
            self.usages.append(usage)
            pixel_start, pixel_end = bounds[pixels_column]
            pixel_fields.append(view[pixel_start:pixel_end])
            pixel_lengths.append(pixel_end - pixel_start)
            line_spans.append((self.line_number, start, end))
            start = newline + 1
        if not pixel_fields:
            return
        end_row = self.num_rows + len(pixel_fields)
        if end_row > len(self.images):
            grown = np.empty((max(end_row, len(self.images) * 3 // 2), NUM_PIXELS), np.uint8)
            grown[: self.num_rows] = self.images[: self.num_rows]
            self.images = grown
        out = self.images[self.num_rows : end_row]
        if not self.pixel_parser.parse(pixel_fields, pixel_lengths, out):
            raise self._first_error((number, block[s:e]) for number, s, e in line_spans)
        self.num_rows = end_row

    def _first_error(self, lines: Iterable[tuple[int, bytes]]) -> Exception:
        """The error for the first bad line of ``lines``, which a fast check found to hold one."""
        for line_number, line in lines:
            problem = _line_error(line, self.columns)
            if problem is not None:
                return DataFormatError(f"{self.path}:{line_number}: {problem}")
        return AssertionError("a fast check failed although every line is valid")

    def splits(self) -> dict[str, SplitArrays]:
        """Group rows by Usage; every split must have rows."""
        images = self.images[: self.num_rows].reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        labels = np.asarray(self.labels, dtype=np.int64)
        usages = np.asarray(self.usages, dtype=np.int64)
        splits = {}
        for code, (usage, split) in enumerate(SPLITS.items()):
            rows = np.flatnonzero(usages == code)
            if not rows.size:
                raise DataFormatError(
                    f"{self.path}: split {usage!r} ({split}) has no rows; FER2013 needs rows with "
                    f"Usage {', '.join(SPLITS)}"
                )
            if rows[-1] - rows[0] + 1 == rows.size:  # contiguous: a view, no copy
                rows = slice(rows[0], rows[-1] + 1)
            splits[split] = SplitArrays(images=images[rows], labels=labels[rows])
        return splits


# ----------------------------------------------------------------------------------------- cache


def _cache_file(csv_path: Path, cache_dir: Path) -> Path:
    """Cache file name: ``fer2013-<path key>-<state key>.npz``. The state key changes with any
    rewrite of the csv: its inode, size, mtime and inode change time, and the format."""
    resolved = csv_path.resolve()
    info = resolved.stat()
    state = (
        f"v{CACHE_FORMAT_VERSION}\0{info.st_dev}\0{info.st_ino}\0{info.st_size}\0"
        f"{info.st_mtime_ns}\0{info.st_ctime_ns}"
    )
    return cache_dir / f"{_cache_stem(resolved)}-{_digest(state)}{_CACHE_SUFFIX}"


def _cache_stem(resolved: Path) -> str:
    """The part of a cache file name that names the csv: entries of earlier versions of the same
    csv share it."""
    return f"fer2013-{_digest(str(resolved))}"


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _read_cache(cache_file: Path) -> dict[str, SplitArrays] | None:
    """Load cached arrays; None when the file is missing, unreadable or inconsistent."""
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as stored:
            splits = {
                split: SplitArrays(stored[f"{split}_images"], stored[f"{split}_labels"])
                for split in SPLITS.values()
            }
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # re-parse
        log.warning("ignoring unreadable cache file %s (%s); rebuilding it", cache_file, exc)
        return None
    if not all(_looks_valid(arrays) for arrays in splits.values()):
        log.warning("ignoring inconsistent cache file %s; rebuilding it", cache_file)
        return None
    return splits


def _looks_valid(arrays: SplitArrays) -> bool:
    images, labels = arrays.images, arrays.labels
    return (
        images.dtype == np.uint8
        and labels.dtype == np.int64
        and images.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE)
        and labels.shape == images.shape[:1]
        and len(labels) > 0
    )


def _write_cache(cache_file: Path, splits: dict[str, SplitArrays]) -> None:
    """Store the arrays as one uncompressed .npz, atomically, replacing the entries of earlier
    versions of the same csv and the temp files of killed writes, so that neither piles up."""
    arrays = {}
    for split, split_arrays in splits.items():
        arrays[f"{split}_images"] = split_arrays.images
        arrays[f"{split}_labels"] = split_arrays.labels
    cache_dir = cache_file.parent
    if cache_dir.exists() and not cache_dir.is_dir():
        raise FERUserError(
            f"cannot write the parse cache: {cache_dir} is a file, not a folder; point "
            "data.cache_dir or the env FER_LIGHTNING_CACHE at a folder "
            "(data.cache_dir=null parses without a cache)"
        )
    try:
        if cache_dir.is_dir():
            remove_stale_temp_files(cache_dir, _CACHE_SUFFIX)
        write_atomically(cache_file, lambda file: np.savez(file, **arrays))
    except OSError as err:
        raise FERUserError(
            f"cannot write the parse cache {cache_file} ({err.strerror or err}); point "
            "data.cache_dir or the env FER_LIGHTNING_CACHE at a writable folder "
            "(data.cache_dir=null parses without a cache)"
        ) from err
    stem = cache_file.name.rsplit("-", 1)[0]
    for earlier in cache_dir.glob(f"{stem}-*{_CACHE_SUFFIX}"):
        if earlier != cache_file:
            earlier.unlink(missing_ok=True)
