"""Read trn.json → clean → filter → dedupe → split → write, streaming with bounded memory.

The input is AmazonTitles-style JSON lines (uid, title, content, target_ind, target_rel): the committed sample
or the real 2,248,619-record file, from a path, plain or gzip-compressed as AmazonTitles-1.3MM ships it
(``trn.json.gz``; told by its first bytes, not its name, and decompressed as it streams). Each line is decoded on
its own and written out at once, so memory holds one line plus an 8-byte hash per kept title (to drop duplicates),
never the records.

    python -m helpers.data --input data/raw/trn.json --output outputs/processed
    python -m helpers.data --input trn.json.gz --output outputs/processed

writes ``train.jsonl`` and ``heldout.jsonl`` (records ``{"uid", "product", "description"}``) and ``stats.json``,
and prints the stats as one JSON object. Every line read is counted exactly once:
read == kept + empty + short + duplicate + malformed.

Input that is not JSON lines fails with InputFormatError naming the file and the likely cause, and leaves no
outputs: another compression (zip, bzip2, xz, zstd, 7z, tar), one JSON array or pretty-printed object, a CSV, or
any file whose lines are mostly not records (see MOSTLY_MALFORMED_SHARE).
"""
from __future__ import annotations

import argparse
import codecs
import gzip
import hashlib
import html
import json
import os
import re
import sys
import textwrap
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import msgspec

from helpers.config import DEMO_PRODUCTS, PROFILE_ENV_VAR, Profile, active_profile, cpu_profile, paths
from helpers.display import FIGURE_DPI, shown_figure
from helpers.files import replaced_on_success

if TYPE_CHECKING:
    import datasets
    import pandas as pd
    from matplotlib.figure import Figure

# What the reference solution reported for the real trn.json (process_data.py).
REFERENCE_RECORDS_READ = 2_248_619
REFERENCE_RECORDS_KEPT = 1_216_560

# A description is at most a few thousand characters; a longer line is broken input, skipped without parsing.
MAX_LINE_BYTES = 1 << 20
# Enough line numbers to find the problem; a file that is all garbage must not fill memory with them.
MALFORMED_LINES_REPORTED = 1_000
WRITE_BATCH_RECORDS = 8_192
PROGRESS_EVERY_LINES = 8_192
# A wrong format is judged on the first 4 KiB: enough for a magic number, a tar header and a first line.
HEAD_BYTES = 4_096

# A file in the wrong format (a CSV, pretty-printed JSON, an archive) fails on nearly every line; a real export
# with some broken records fails on a few. "More than half" lies far from both, so neither is mistaken for the other.
MOSTLY_MALFORMED_SHARE = 0.5
# A share of a handful of lines is chance, not evidence: 2 broken records beside 1 good one are a dirty file, not a
# wrong format. Below this many lines, only a file in which no line at all is a record is judged wrong.
# Blank lines count in neither total: a file with a blank line after every record loses nothing.
LINES_TO_JUDGE_SHARE = 20

GZIP_MAGIC = b"\x1f\x8b"
# Formats we do not stream, by their first bytes, with the command that unpacks each.
OTHER_FORMAT_MAGIC = {
    b"PK\x03\x04": ("zip", "unzip"),
    b"BZh": ("bzip2", "bunzip2"),
    b"\xfd7zXZ\x00": ("xz", "unxz"),
    b"\x28\xb5\x2f\xfd": ("zstd", "unzstd"),
    b"7z\xbc\xaf\x27\x1c": ("7z", "7z x"),
}
# A tar archive has no magic at the start: "ustar" sits at byte 257 of its first header.
TAR_MAGIC, TAR_MAGIC_OFFSET = b"ustar", 257
PRETTY_PRINTED_CAUSE = ("the file is JSON spread over many lines (pretty-printed), not JSON lines (one record per "
                        "line). Convert it first, e.g. `jq -c . input.json > trn.json`.")
# What a damaged gzip stream raises part-way through: a bad header, bad deflate data, or a file cut short.
GZIP_ERRORS = (gzip.BadGzipFile, zlib.error, EOFError)

# Near neighbours of the demo products stay in train with them, so that retrieval has look-alikes to confuse.
DEMO_NEIGHBOUR_PATTERN = re.compile(r"\b(?:ballet tutu|mog|prophet|book of)\b", re.IGNORECASE)
# What the reference's process_data.py did to every title and description, before decoding entities.
REFERENCE_PUNCTUATION = re.compile(r"[^\w\s]")

TRAIN_FILE, HELDOUT_FILE, STATS_FILE = "train.jsonl", "heldout.jsonl", "stats.json"
PROCESSED_COLUMNS = ("uid", "product", "description")
LENGTHS_FIGURE = "01_description_lengths.png"


class InputFormatError(ValueError):
    """The input cannot be read as JSON lines at all; the message names the file and the line."""


class RawRecord(msgspec.Struct):
    """The trn.json fields we use; target_ind and target_rel are skipped by the decoder, not parsed."""

    uid: str
    title: str
    content: str


class ProcessedRecord(msgspec.Struct):
    uid: str
    product: str
    description: str


@dataclass
class PreprocessingStats:
    input: str
    min_description_chars: int
    heldout_fraction: float
    read: int = 0
    kept: int = 0
    train: int = 0
    heldout: int = 0
    empty: int = 0
    short: int = 0
    duplicate: int = 0
    malformed: int = 0
    blank: int = 0  # of the malformed lines, those with nothing on them
    malformed_lines: list[dict] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    input_signature: dict[str, int] = field(default_factory=dict)

    def add_malformed(self, line_number: int, reason: str) -> None:
        self.malformed += 1
        if len(self.malformed_lines) < MALFORMED_LINES_REPORTED:
            self.malformed_lines.append({"line": line_number, "reason": reason})


def clean_text(text: str) -> str:
    """Decode HTML entities, then collapse whitespace; punctuation stays (it carries ages, sizes and names)."""
    # Decode entities before anything else: stripping punctuation first leaves "Kerr8217s".
    if "&" in text:
        text = html.unescape(text)
    return " ".join(text.split())


def reference_clean(text: str) -> str:
    """The reference solution's cleaning, kept to show what it did: punctuation stripped, entities left behind."""
    return REFERENCE_PUNCTUATION.sub("", text)


def title_hash(product: str) -> int:
    """A stable 64-bit hash of a cleaned title: the same on every machine and run (unlike Python's hash())."""
    return int.from_bytes(hashlib.blake2b(product.encode(), digest_size=8).digest(), "big")


def is_demo_neighbour(product: str) -> bool:
    return product in DEMO_PRODUCTS or DEMO_NEIGHBOUR_PATTERN.search(product) is not None


def is_held_out(product: str, heldout_fraction: float) -> bool:
    """Held out when the title's hash falls in the first ``heldout_fraction`` of the range; demos never are."""
    threshold = int(heldout_fraction * 2**64)
    return title_hash(product) < threshold and not is_demo_neighbour(product)


def is_gzip(path: Path) -> bool:
    """Told by the first two bytes, not the name: a trn.json.gz saved as trn.json is still gzip."""
    with path.open("rb") as source:
        return source.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def open_input(path: Path) -> BinaryIO:
    """The file's bytes as a binary stream, decompressed as they are read when the file is gzip."""
    return gzip.open(path, "rb") if is_gzip(path) else path.open("rb")


def read_head(path: Path) -> bytes:
    """The first HEAD_BYTES of the (decompressed) content, without a byte order mark."""
    try:
        with open_input(path) as source:
            return source.read(HEAD_BYTES).removeprefix(codecs.BOM_UTF8)
    except GZIP_ERRORS as error:
        raise InputFormatError(f"{path}: the file starts like gzip but cannot be decompressed ({error})") from error


def other_format(head: bytes) -> tuple[str, str] | None:
    """(name, unpacking command) of an archive or compression we do not read, if ``head`` starts like one."""
    for magic, name_and_command in OTHER_FORMAT_MAGIC.items():
        if head.startswith(magic):
            return name_and_command
    if head[TAR_MAGIC_OFFSET:TAR_MAGIC_OFFSET + len(TAR_MAGIC)] == TAR_MAGIC:
        return "tar", "tar -xf"
    return None


def first_line(head: bytes) -> bytes:
    """The first line with anything on it, stripped."""
    return head.lstrip().split(b"\n", 1)[0].strip()


def check_input_file(path: Path) -> None:
    """Fail early, naming the file, on what cannot be JSON lines: missing, a folder, unreadable, empty, another
    compression or an archive, one JSON array, or one JSON object spread over many lines."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, expected a JSON lines file")
    try:
        head = read_head(path)
    except PermissionError as error:
        raise PermissionError(f"{path}: permission denied, the file cannot be read") from error
    if not head:
        raise InputFormatError(f"{path}: the file is empty; expected JSON lines of uid, title, content")
    if packed := other_format(head):
        name, command = packed
        raise InputFormatError(
            f"{path}: the file is {name} data, not JSON lines; only plain or gzip-compressed JSON lines are read. "
            f"Unpack it first, e.g. `{command} {path.name}`."
        )
    if head.lstrip().startswith(b"["):
        raise InputFormatError(
            f"{path}:1: the file is one JSON array, not JSON lines (one record per line). "
            "Convert it first, e.g. `jq -c '.[]' input.json > trn.json`."
        )
    if first_line(head) == b"{":
        raise InputFormatError(f"{path}:1: {PRETTY_PRINTED_CAUSE}")


def read_line(path: Path, number: int) -> bytes:
    """Line ``number`` (from 1) of the (decompressed) file, stripped and cut at MAX_LINE_BYTES: read again only to
    explain an error, so the hot loop need not keep any line."""
    line = b""
    with open_input(path) as source:
        for _ in range(number):
            line = source.readline(MAX_LINE_BYTES + 1)
            if len(line) > MAX_LINE_BYTES:
                _skip_rest_of_line(source, line)
    return line.removeprefix(codecs.BOM_UTF8).strip()


def likely_cause(line: bytes) -> str:
    """Why lines are not records, guessed from the first one that is not (stripped)."""
    if line.startswith((b"{", b"[")):
        # A pretty-printed document breaks its first line after an opening bracket or a field's comma.
        if line.endswith((b"{", b"[", b",")):
            return PRETTY_PRINTED_CAUSE
        try:
            msgspec.json.decode(line)
        except msgspec.DecodeError:
            return "its lines start like JSON but are broken (cut short or invalid)."
        return "its lines are JSON but not trn.json records (uid, title, content as strings)."
    if b"," in line or b"\t" in line:
        shown = line[:80].decode("utf-8", "replace")
        return (f"it looks like CSV or TSV ({shown!r}), not JSON lines. Convert it to one JSON object per line "
                "with uid, title, content.")
    return "it does not look like JSON lines at all."


def is_mostly_malformed(stats: PreprocessingStats) -> bool:
    """No line at all is a record, or more than MOSTLY_MALFORMED_SHARE of enough non-blank lines are not."""
    if stats.read and stats.malformed == stats.read:
        return True
    lines, broken = stats.read - stats.blank, stats.malformed - stats.blank
    return lines >= LINES_TO_JUDGE_SHARE and broken > MOSTLY_MALFORMED_SHARE * lines


def raise_if_mostly_malformed(path: Path, stats: PreprocessingStats) -> None:
    """A wrong format is an error naming the file and the likely cause, not a run that keeps nothing."""
    if not is_mostly_malformed(stats):
        return
    lines, broken = stats.read - stats.blank, stats.malformed - stats.blank
    if not lines:
        raise InputFormatError(f"{path}: the file has only blank lines; expected JSON lines of uid, title, content")
    first = next((entry for entry in stats.malformed_lines if entry["reason"] != "blank line"),
                 stats.malformed_lines[0])
    cause = likely_cause(read_line(path, first["line"]))
    raise InputFormatError(f"{path}: {broken:,} of {lines:,} non-blank lines are not trn.json records; {cause} "
                           f"(line {first['line']}: {first['reason']})")


def count_lines(path: Path) -> int:
    """Lines in the (decompressed) file, counted in 1 MiB blocks (a second per gigabyte): the progress bar's total."""
    lines, last_block = 0, b"\n"
    with open_input(path) as source:
        while block := source.read(1 << 20):
            lines += block.count(b"\n")
            last_block = block
    return lines + (not last_block.endswith(b"\n"))


def _skip_rest_of_line(source, line: bytes) -> int:
    """Read past an over-long line in bounded chunks; return its full length in bytes."""
    length = len(line)
    while not line.endswith(b"\n"):
        line = source.readline(MAX_LINE_BYTES)
        if not line:
            break
        length += len(line)
    return length


def preprocess(
    input_path: Path | str,
    output_dir: Path | str,
    *,
    min_description_chars: int = 100,
    heldout_fraction: float = 0.05,
    progress: bool = False,
) -> dict:
    """Clean, filter, dedupe and split ``input_path`` into ``output_dir``; return (and save) the stats."""
    input_path, output_dir = Path(input_path), Path(output_dir)
    check_input_file(input_path)
    output_dir.mkdir(parents=True, exist_ok=True)
    stats = PreprocessingStats(str(input_path), min_description_chars, heldout_fraction)
    final = {name: output_dir / file for name, file in
             (("train", TRAIN_FILE), ("heldout", HELDOUT_FILE), ("stats", STATS_FILE))}
    bar = None
    if progress:
        from helpers.quiet import progress as progress_bar

        bar = progress_bar(total=count_lines(input_path), unit="records", desc=f"preprocessing {input_path.name}")
    # Written under temporary names and renamed when all went well, stats last (outermost): its presence marks
    # complete outputs, and a crash or a wrong format never leaves outputs that look complete.
    try:
        with (replaced_on_success(final["stats"]) as stats_file, replaced_on_success(final["train"]) as train_path,
              replaced_on_success(final["heldout"]) as heldout_path):
            with train_path.open("wb") as train_file, heldout_path.open("wb") as heldout_file:
                _stream_input(input_path, train_file, heldout_file, stats, bar)
            raise_if_mostly_malformed(input_path, stats)
            stats.outputs = {name: str(path) for name, path in final.items()}
            input_stat = input_path.stat()
            stats.input_signature = {"bytes": input_stat.st_size, "mtime_ns": input_stat.st_mtime_ns}
            stats_file.write_text(json.dumps(asdict(stats), indent=1, ensure_ascii=False) + "\n")
    finally:
        if bar is not None:
            bar.close()
    return asdict(stats)


def _stream_input(input_path: Path, train_file, heldout_file, stats: PreprocessingStats, bar) -> None:
    """The hot loop over the file's (decompressed) bytes; a damaged gzip stream is an error naming the file."""
    try:
        with open_input(input_path) as source:
            _stream_records(source, train_file, heldout_file, stats, bar)
    except GZIP_ERRORS as error:
        raise InputFormatError(f"{input_path}: the gzip data is damaged or cut short ({error}); "
                               "download the file again") from error


def _stream_records(source, train_file, heldout_file, stats: PreprocessingStats, bar) -> None:
    """The hot loop: one pass, one line in memory, cheap checks before any cleaning.

    Longer than the course's other functions on purpose: 2.2 million lines go through it, and every function call
    or attribute lookup taken out of the loop (the locals bound below) is measured time (benchmarks/preprocessing.py),
    so the checks stay inline rather than in helpers called once per line.
    """
    decode = msgspec.json.Decoder(RawRecord).decode
    encode_lines = msgspec.json.Encoder().encode_lines
    decode_errors = (msgspec.DecodeError, UnicodeDecodeError)
    minimum = stats.min_description_chars
    heldout_threshold = int(stats.heldout_fraction * 2**64)
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    seen_titles: set[int] = set()
    train_batch: list[ProcessedRecord] = []
    heldout_batch: list[ProcessedRecord] = []
    line_number = empty = short = duplicate = blank = 0

    if source.read(3) != codecs.BOM_UTF8:  # files saved by Windows tools may start with a byte order mark
        source.seek(0)
    while line := source.readline(MAX_LINE_BYTES + 1):
        line_number += 1
        if bar is not None and line_number % PROGRESS_EVERY_LINES == 0:
            bar.update(PROGRESS_EVERY_LINES)
        if len(line) > MAX_LINE_BYTES:
            length = _skip_rest_of_line(source, line)
            stats.add_malformed(line_number, f"line is {length:,} bytes, over the {MAX_LINE_BYTES:,}-byte limit")
            continue
        try:
            record = decode(line)
        except decode_errors as error:
            if line.strip():
                stats.add_malformed(line_number, f"{type(error).__name__}: {error}")
            else:
                blank += 1
                stats.add_malformed(line_number, "blank line")
            continue
        content = record.content
        # Cleaning only ever shortens a text, so a raw content under the minimum is short without cleaning it.
        if len(content) < minimum:
            if not content or not clean_text(content):
                empty += 1
            else:
                short += 1
            continue
        description = clean_text(content)
        if len(description) < minimum:
            if description:
                short += 1
            else:
                empty += 1
            continue
        product = clean_text(record.title)
        if not product:
            stats.add_malformed(line_number, "empty title")
            continue
        key = from_bytes(blake2b(product.encode(), digest_size=8).digest(), "big")
        if key in seen_titles:
            duplicate += 1
            continue
        seen_titles.add(key)
        processed = ProcessedRecord(record.uid, product, description)
        if key < heldout_threshold and not is_demo_neighbour(product):
            heldout_batch.append(processed)
        else:
            train_batch.append(processed)
            if len(train_batch) == WRITE_BATCH_RECORDS:
                train_file.write(encode_lines(train_batch))
                stats.train += len(train_batch)
                train_batch.clear()
        if len(heldout_batch) == WRITE_BATCH_RECORDS:
            heldout_file.write(encode_lines(heldout_batch))
            stats.heldout += len(heldout_batch)
            heldout_batch.clear()
    train_file.write(encode_lines(train_batch))
    heldout_file.write(encode_lines(heldout_batch))
    stats.train += len(train_batch)
    stats.heldout += len(heldout_batch)
    stats.kept = stats.train + stats.heldout
    stats.read, stats.empty, stats.short, stats.duplicate, stats.blank = line_number, empty, short, duplicate, blank
    if bar is not None:
        bar.update(line_number - bar.n)


def _settings_match(stats: dict, profile: Profile, raw_path: Path) -> bool:
    raw_stat = raw_path.stat()
    return (
        stats.get("min_description_chars") == profile.min_description_chars
        and stats.get("heldout_fraction") == profile.heldout_fraction
        and stats.get("input_signature") == {"bytes": raw_stat.st_size, "mtime_ns": raw_stat.st_mtime_ns}
        and all(Path(path).is_file() for path in stats.get("outputs", {}).values())
    )


def build_processed(profile: Profile | None = None, progress: bool = True) -> dict:
    """Preprocess the committed sample into outputs/processed with the profile's settings; return the stats."""
    profile = profile or active_profile(verbose=False)
    raw_path = paths().raw_sample
    if not raw_path.is_file():
        raise FileNotFoundError(f"{raw_path}: the raw sample is missing; regenerate it with "
                                "`python -m helpers.synthetic`")
    return preprocess(raw_path, paths().processed, min_description_chars=profile.min_description_chars,
                      heldout_fraction=profile.heldout_fraction, progress=progress)


def ensure_processed(profile: Profile | None = None, progress: bool = True) -> dict:
    """outputs/processed for the committed sample, built only if missing or made with other settings."""
    profile = profile or active_profile(verbose=False)
    stats_path = paths().processed / STATS_FILE
    if stats_path.is_file() and paths().raw_sample.is_file():
        stats = json.loads(stats_path.read_text())
        if _settings_match(stats, profile, paths().raw_sample):
            return stats
    return build_processed(profile, progress)


def read_processed(path: Path) -> list[dict]:
    with path.open("rb") as source:
        return [msgspec.json.decode(line) for line in source if line.strip()]


def load_processed(profile: Profile | None = None) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, heldout) as datasets.Dataset with columns uid, product, description; built first if needed."""
    import datasets

    stats = ensure_processed(profile)
    features = datasets.Features({column: datasets.Value("string") for column in PROCESSED_COLUMNS})
    return tuple(
        datasets.Dataset.from_list(read_processed(Path(stats["outputs"][split])), features=features)
        for split in ("train", "heldout")
    )


# --- Which records train the model, and which evaluate it ----------------------------------------------------------


def fits_training(record: dict, profile: Profile) -> bool:
    """Whether a description is short enough to train on whole: a cut one would end without EOS and teach rambling."""
    return len(record["description"].split()) <= profile.max_completion_words


def select_training_records(train: datasets.Dataset, profile: Profile) -> datasets.Dataset:
    """profile.train_examples records: the four demo products, then a seeded shuffle of the rest that fit whole."""
    demo = train.filter(lambda record: record["product"] in DEMO_PRODUCTS)
    missing = set(DEMO_PRODUCTS) - set(demo["product"])
    if missing:
        raise ValueError(f"The training split lacks the demo products {sorted(missing)}: rebuild outputs/processed.")
    demo = demo.select(range(len(DEMO_PRODUCTS))) if len(demo) > len(DEMO_PRODUCTS) else demo
    others = train.filter(lambda record: record["product"] not in DEMO_PRODUCTS and fits_training(record, profile))
    others = others.shuffle(seed=profile.seed)
    wanted = profile.train_examples - len(demo)
    if wanted > len(others):
        raise ValueError(f"profile.train_examples={profile.train_examples} but only {len(others) + len(demo)} "
                         "training records fit.")
    import datasets

    return datasets.concatenate_datasets([demo, others.select(range(wanted))])


def too_long_to_train(train: datasets.Dataset, profile: Profile) -> int:
    """How many training-split records select_training_records passes over because their description is too long."""
    return sum(not fits_training(record, profile) for record in train)


def evaluation_samples(profile: Profile | None = None) -> dict[str, list[dict]]:
    """The products every notebook evaluates on, drawn once with the profile's seed.

    "demo": the reference's four products (trained on and indexed, as in the reference); "in-index":
    profile.eval_examples other products of the training split that the fine-tune does not train on
    (select_training_records) but the index of notebook 04 holds; "held-out": profile.eval_examples products of the
    held-out split (never trained on, never indexed). Notebooks 02, 03 and 06 answer these same held-out products.
    """
    profile = profile or active_profile(verbose=False)
    train, held_out = load_processed(profile)
    first_by_title = {}
    for record in train:
        first_by_title.setdefault(record["product"], record)
    missing = [title for title in DEMO_PRODUCTS if title not in first_by_title]
    if missing:
        raise ValueError(f"demo products missing from the training records: {missing}")
    trained = set(select_training_records(train, profile)["uid"])
    not_demo = train.filter(lambda record: record["product"] not in DEMO_PRODUCTS and record["uid"] not in trained)
    if min(len(not_demo), len(held_out)) < profile.eval_examples:
        raise ValueError(f"profile.eval_examples={profile.eval_examples}, but there are {len(not_demo)} in-index and "
                         f"{len(held_out)} held-out products.")
    return {
        "demo": [first_by_title[title] for title in DEMO_PRODUCTS],
        "in-index": list(not_demo.shuffle(seed=profile.seed).select(range(profile.eval_examples))),
        "held-out": list(held_out.shuffle(seed=profile.seed).select(range(profile.eval_examples))),
    }


# --- Notebook helpers ------------------------------------------------------------------------------------------


def find_raw_record(title: str, raw_path: Path | None = None) -> dict:
    """The first raw trn.json record whose title is ``title``, as stored in the file (entities and all)."""
    raw_path = raw_path or paths().raw_sample
    decoder = msgspec.json.Decoder(RawRecord)
    with open_input(raw_path) as source:
        for line in source:
            try:
                record = decoder.decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError):
                continue
            if record.title == title:
                return msgspec.structs.asdict(record)
    raise KeyError(f"{raw_path}: no record titled {title!r}")


def cleaning_versions(title: str, raw_path: Path | None = None) -> dict[str, dict[str, str]]:
    """A raw record, as the reference cleaned it, and as we clean it."""
    record = find_raw_record(title, raw_path)
    return {
        "raw trn.json": {"product": record["title"], "description": record["content"]},
        "reference (punctuation stripped first)": {
            "product": reference_clean(record["title"]), "description": reference_clean(record["content"])},
        "ours (entities decoded first)": {
            "product": clean_text(record["title"]), "description": clean_text(record["content"])},
    }


def show_cleaning_example(title: str, raw_path: Path | None = None, width: int = 110) -> None:
    """Print the three versions of one record, wrapped for reading."""
    for name, version in cleaning_versions(title, raw_path).items():
        print(f"{name}\n  product:     {version['product']}")
        print(textwrap.fill(version["description"], width, initial_indent="  description: ",
                            subsequent_indent=" " * 15))


def cleaned_description_lengths(raw_path: Path | None = None) -> list[int]:
    """Length after cleaning of every readable record's content, empty ones included."""
    raw_path = raw_path or paths().raw_sample
    decoder = msgspec.json.Decoder(RawRecord)
    lengths = []
    with open_input(raw_path) as source:
        for line in source:
            try:
                lengths.append(len(clean_text(decoder.decode(line).content)))
            except (msgspec.DecodeError, UnicodeDecodeError):
                continue
    return lengths


def plot_description_lengths(profile: Profile | None = None, raw_path: Path | None = None,
                             clip_chars: int = 800, figures_dir: Path | None = None) -> Figure:
    """Histogram of description lengths with the minimum marked; saved in ``figures_dir`` (outputs/figures by
    default) and returned."""
    profile = profile or active_profile(verbose=False)
    lengths = cleaned_description_lengths(raw_path)
    minimum = profile.min_description_chars
    # A few descriptions run to thousands of characters; they go into the last bar so the rest stays readable.
    clipped = [min(length, clip_chars) for length in lengths]
    figure = shown_figure()(figsize=(8, 3.5))
    axes = figure.subplots()
    axes.hist(clipped, bins=range(0, clip_chars + 26, 25), color="tab:blue", edgecolor="white")
    axes.axvline(minimum, color="tab:red", linestyle="--", label=f"minimum kept: {minimum} characters")
    empty = sum(length == 0 for length in lengths)
    short = sum(0 < length < minimum for length in lengths)
    axes.set_title(f"{len(lengths):,} descriptions: {empty:,} empty, {short:,} shorter than {minimum} characters")
    axes.set_xlabel(f"characters after cleaning (≥ {clip_chars} in the last bar)")
    axes.set_ylabel("records")
    axes.legend()
    figure.tight_layout()
    figures_dir = figures_dir or paths().figures
    figures_dir.mkdir(parents=True, exist_ok=True)
    figure.savefig(figures_dir / LENGTHS_FIGURE, dpi=FIGURE_DPI)
    return figure


def split_summary(stats: dict) -> pd.DataFrame:
    """Where every line of the input went, with its share of the lines read."""
    import pandas as pd

    rows = {
        "read": stats["read"],
        "dropped: empty description": stats["empty"],
        f"dropped: description under {stats['min_description_chars']} characters": stats["short"],
        "dropped: duplicate title": stats["duplicate"],
        "skipped: malformed line": stats["malformed"],
        "kept": stats["kept"],
        "kept → train (fine-tuning and the RAG index)": stats["train"],
        "kept → held-out evaluation (never trained on or indexed)": stats["heldout"],
    }
    table = pd.DataFrame({"records": pd.Series(rows)})
    table["share of read"] = (table["records"] / max(stats["read"], 1)).map("{:.1%}".format)
    return table


def compare_with_reference(stats: dict) -> pd.DataFrame:
    """The reference's counts on the real trn.json next to ours on this input."""
    import pandas as pd

    rows = {
        "reference: real trn.json": (REFERENCE_RECORDS_READ, REFERENCE_RECORDS_KEPT),
        "this course: committed sample": (stats["read"], stats["kept"]),
    }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["read", "kept"])
    table["kept share"] = (table["kept"] / table["read"]).map("{:.1%}".format)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Preprocess an AmazonTitles trn.json or trn.json.gz (JSON lines): clean, filter, dedupe, split. "
                    "Prints the stats as one JSON object.")
    parser.add_argument("--input", type=Path, required=True,
                        help="trn.json-style JSON lines file, plain or gzip-compressed")
    parser.add_argument("--output", type=Path, required=True, help="folder for train.jsonl, heldout.jsonl, stats.json")
    # The data settings are the same in every profile: no need to import torch just to ask about CUDA.
    profile = active_profile(verbose=False) if os.environ.get(PROFILE_ENV_VAR) else cpu_profile()
    parser.add_argument("--min-description-chars", type=int, default=profile.min_description_chars)
    parser.add_argument("--heldout-fraction", type=float, default=profile.heldout_fraction)
    arguments = parser.parse_args(argv)
    # OSError covers FileNotFoundError, IsADirectoryError, PermissionError and a full disk; each message names the path.
    try:
        stats = preprocess(arguments.input, arguments.output, min_description_chars=arguments.min_description_chars,
                           heldout_fraction=arguments.heldout_fraction)
    except (OSError, InputFormatError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(stats, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
