"""Preprocessing promises: entities decoded not stripped, thresholds, duplicates, a real hold-out, bad input,
gzip read as it ships, and no wrong format passing silently."""
import bz2
import codecs
import gzip
import io
import json
import lzma
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from helpers import data
from helpers.config import DEMO_PRODUCTS, cpu_profile, paths

LONG_ENOUGH = "Sturdy board book with bright pictures for the very young, 24 pages, ages 1-3, first published 1999."


def record(title: str, content: str = LONG_ENOUGH, uid: str = "U1") -> dict:
    return {"uid": uid, "title": title, "content": content, "target_ind": [1, 2], "target_rel": [1.0, 1.0]}


def write_lines(path: Path, lines: list) -> Path:
    """Write records (dicts) or raw lines (bytes) as one JSON line each."""
    with path.open("wb") as output:
        for line in lines:
            output.write(line if isinstance(line, bytes) else json.dumps(line).encode())
            output.write(b"\n")
    return path


def run(tmp_path: Path, lines: list, **settings) -> dict:
    return data.preprocess(write_lines(tmp_path / "trn.json", lines), tmp_path / "out", **settings)


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def kept_records(stats: dict) -> list[dict]:
    return read_jsonl(stats["outputs"]["train"]) + read_jsonl(stats["outputs"]["heldout"])


def gzip_file(path: Path, content: bytes) -> Path:
    path.write_bytes(gzip.compress(content, mtime=0))
    return path


def json_lines(*titles: str) -> bytes:
    return b"".join(json.dumps(record(title)).encode() + b"\n" for title in titles)


def assert_no_outputs(output_dir: Path) -> None:
    """Nothing that could pass for a finished run: the folder is missing or empty."""
    assert not output_dir.exists() or list(output_dir.iterdir()) == []


def assert_every_line_counted(stats: dict) -> None:
    assert stats["read"] == (stats["kept"] + stats["empty"] + stats["short"] + stats["duplicate"]
                             + stats["malformed"])
    assert stats["kept"] == stats["train"] + stats["heldout"]


# --- Cleaning ---------------------------------------------------------------------------------------------------


def test_html_entities_are_decoded_not_stripped():
    assert data.clean_text("Judith Kerr&#8217;s best&#8211;selling") == "Judith Kerr’s best–selling"


def test_hex_named_and_quote_entities_are_decoded():
    assert data.clean_text("Kerr&#x2019;s Tea &amp; Cake, &quot;lovely&quot;") == 'Kerr’s Tea & Cake, "lovely"'


def test_punctuation_carrying_facts_is_kept():
    assert data.clean_text("Dance tutu for girls ages 2-8 years. (Size: M)") == \
        "Dance tutu for girls ages 2-8 years. (Size: M)"


def test_whitespace_is_normalised():
    assert data.clean_text("  two  spaces,\nnew line\tand tab  ") == "two spaces, new line and tab"


def test_reference_cleaning_shows_the_defect_we_fix():
    assert data.reference_clean("Judith Kerr&#8217;s ages 2-8") == "Judith Kerr8217s ages 28"


# --- Filters and duplicates ---------------------------------------------------------------------------------------


def test_description_of_99_characters_is_short_and_100_is_kept(tmp_path):
    stats = run(tmp_path, [record("Ninety-nine", "x" * 99), record("One hundred", "y" * 100)])
    assert (stats["short"], stats["kept"]) == (1, 1)
    assert [kept["product"] for kept in kept_records(stats)] == ["One hundred"]


def test_threshold_applies_after_decoding_entities(tmp_path):
    # 103 raw characters, 99 once "&amp;" is decoded: the reference would have kept it on its raw length.
    shrinks_below = "a" * 49 + "&amp;" + "b" * 49
    stays_above = "a" * 50 + "&amp;" + "b" * 49
    stats = run(tmp_path, [record("Shrinks", shrinks_below), record("Stays", stays_above)])
    assert (stats["short"], stats["kept"]) == (1, 1)


def test_empty_and_whitespace_only_contents_are_counted_as_empty(tmp_path):
    stats = run(tmp_path, [record("Empty", ""), record("Blank", "   \t "), record("Kept")])
    assert (stats["empty"], stats["kept"]) == (2, 1)


def test_duplicate_titles_keep_the_first_record(tmp_path):
    stats = run(tmp_path, [record("Mog&#8217;s Bad Thing", uid="first"), record("Mog’s Bad Thing", uid="second"),
                           record("Mog's Bad Thing", uid="different apostrophe")])
    assert stats["duplicate"] == 1
    assert [kept["uid"] for kept in kept_records(stats)] == ["first", "different apostrophe"]


def test_a_short_first_record_does_not_shadow_a_good_duplicate(tmp_path):
    stats = run(tmp_path, [record("Goodbye Mog", "Paperback", uid="short"), record("Goodbye Mog", uid="good")])
    assert (stats["short"], stats["duplicate"]) == (1, 0)
    assert [kept["uid"] for kept in kept_records(stats)] == ["good"]


def test_processed_records_have_exactly_uid_product_description(tmp_path):
    stats = run(tmp_path, [record("The Madman", "Gibran&#8217;s first book in English. " * 4, uid="0394432002")])
    assert kept_records(stats) == [{"uid": "0394432002", "product": "The Madman",
                                    "description": ("Gibran’s first book in English. " * 4).strip()}]


# --- Hold-out split -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_stats(tmp_path_factory) -> dict:
    profile = cpu_profile()
    return data.preprocess(paths().raw_sample, tmp_path_factory.mktemp("processed"),
                           min_description_chars=profile.min_description_chars,
                           heldout_fraction=profile.heldout_fraction)


def test_no_held_out_product_is_in_train(sample_stats):
    train_products = {kept["product"] for kept in read_jsonl(sample_stats["outputs"]["train"])}
    heldout_products = {kept["product"] for kept in read_jsonl(sample_stats["outputs"]["heldout"])}
    assert heldout_products and train_products
    assert not train_products & heldout_products


def test_held_out_share_is_close_to_the_profile(sample_stats):
    share = sample_stats["heldout"] / sample_stats["kept"]
    assert 0.5 * sample_stats["heldout_fraction"] < share < 1.5 * sample_stats["heldout_fraction"]


def test_demo_products_and_their_neighbours_are_in_train(sample_stats):
    train_products = {kept["product"] for kept in read_jsonl(sample_stats["outputs"]["train"])}
    assert set(DEMO_PRODUCTS) <= train_products
    assert {"Girls Ballet Tutu Neon Pink", "Mog on Fox Night", "The Book of Daniel"} <= train_products
    heldout_products = [kept["product"] for kept in read_jsonl(sample_stats["outputs"]["heldout"])]
    assert not any(data.is_demo_neighbour(product) for product in heldout_products)


def test_split_follows_the_stable_title_hash(sample_stats):
    for split, expected in (("train", False), ("heldout", True)):
        for kept in read_jsonl(sample_stats["outputs"][split]):
            assert data.is_held_out(kept["product"], sample_stats["heldout_fraction"]) is expected


def test_split_is_deterministic(sample_stats, tmp_path):
    again = data.preprocess(paths().raw_sample, tmp_path, heldout_fraction=sample_stats["heldout_fraction"])
    for split in ("train", "heldout"):
        assert Path(again["outputs"][split]).read_bytes() == Path(sample_stats["outputs"][split]).read_bytes()


def test_title_hash_is_stable_across_runs():
    # The value every machine, run and Python version must produce: Python's own hash() would change with
    # PYTHONHASHSEED and reshuffle the split.
    assert data.title_hash("Mog's Kittens") == 18_283_902_793_202_894_881
    assert data.title_hash("Mog's Kittens") != data.title_hash("Mog's Kittens ")


def test_sample_counts_add_up(sample_stats):
    assert_every_line_counted(sample_stats)
    assert sample_stats["empty"] and sample_stats["short"] and sample_stats["duplicate"]


# --- Bad input ------------------------------------------------------------------------------------------------------


def test_bad_lines_are_counted_with_line_numbers_and_reasons(tmp_path):
    stats = run(tmp_path, [
        record("Good one"),
        b'{"uid": "1", "title": "Broken", "content": ',                      # 2: truncated JSON
        b'{"uid": "2", "title": "Latin-1 \xe9", "content": "x"}',           # 3: invalid UTF-8
        json.dumps({"uid": "3", "content": LONG_ENOUGH}).encode(),          # 4: missing title
        json.dumps(record(17)).encode(),                                    # 5: title is a number
        json.dumps(record("Null content", None)).encode(),                  # 6: content is null
        b"",                                                                # 7: blank line
        json.dumps(record("   ")).encode(),                                 # 8: empty title
        record("Good two"),
    ])
    assert stats["malformed"] == 7 and stats["kept"] == 2
    reasons = {entry["line"]: entry["reason"] for entry in stats["malformed_lines"]}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8]
    assert "UnicodeDecodeError" in reasons[3]
    assert "title" in reasons[4] and "`$.title`" in reasons[5] and "null" in reasons[6]
    assert reasons[7] == "blank line" and reasons[8] == "empty title"
    assert_every_line_counted(stats)


def test_a_50_megabyte_line_is_skipped_without_stopping(tmp_path):
    huge = json.dumps(record("Huge", "z" * 50_000_000)).encode()
    stats = run(tmp_path, [record("Before"), huge, record("After")])
    assert stats["malformed"] == 1 and stats["kept"] == 2
    assert stats["malformed_lines"][0]["line"] == 2
    assert f"{len(huge) + 1:,} bytes" in stats["malformed_lines"][0]["reason"]


def test_empty_file_is_a_clear_error(tmp_path):
    empty = tmp_path / "trn.json"
    empty.write_bytes(b"")
    with pytest.raises(data.InputFormatError, match=f"{empty}: the file is empty"):
        data.preprocess(empty, tmp_path / "out")


def test_one_json_array_is_a_clear_error(tmp_path):
    array = tmp_path / "trn.json"
    array.write_text(json.dumps([record("A"), record("B")], indent=1))
    with pytest.raises(data.InputFormatError, match=f"{array}:1: the file is one JSON array"):
        data.preprocess(array, tmp_path / "out")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json: no such file"):
        data.preprocess(tmp_path / "nowhere.json", tmp_path / "out")


def test_byte_order_mark_is_tolerated(tmp_path):
    path = write_lines(tmp_path / "trn.json", [record("Windows file")])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert data.preprocess(path, tmp_path / "out")["kept"] == 1


def test_failed_run_leaves_no_outputs(tmp_path, monkeypatch):
    def crash(*arguments):
        raise RuntimeError("disk full")

    monkeypatch.setattr(data, "_stream_records", crash)
    with pytest.raises(RuntimeError):
        run(tmp_path, [record("A")])
    assert list((tmp_path / "out").iterdir()) == []


# --- Gzip, as AmazonTitles-1.3MM ships trn.json.gz -----------------------------------------------------------------

COUNTS = ("read", "kept", "train", "heldout", "empty", "short", "duplicate", "malformed", "malformed_lines")


def test_gzipped_sample_gives_the_same_counts_and_outputs_as_the_plain_file(sample_stats, tmp_path):
    compressed = gzip_file(tmp_path / "trn.json.gz", paths().raw_sample.read_bytes())
    stats = data.preprocess(compressed, tmp_path / "out", min_description_chars=sample_stats["min_description_chars"],
                            heldout_fraction=sample_stats["heldout_fraction"])
    assert {key: stats[key] for key in COUNTS} == {key: sample_stats[key] for key in COUNTS}
    assert_every_line_counted(stats)
    for split in ("train", "heldout"):
        assert Path(stats["outputs"][split]).read_bytes() == Path(sample_stats["outputs"][split]).read_bytes()


@pytest.mark.parametrize("name", ["trn.json.gz", "trn.json", "download"])
def test_gzip_is_told_by_its_first_bytes_not_its_name(tmp_path, name):
    stats = data.preprocess(gzip_file(tmp_path / name, json_lines("A", "B")), tmp_path / "out")
    assert (stats["kept"], stats["malformed"]) == (2, 0)


def test_a_plain_file_named_gz_is_read_as_plain(tmp_path):
    stats = data.preprocess(write_lines(tmp_path / "trn.json.gz", [record("A")]), tmp_path / "out")
    assert (stats["kept"], stats["malformed"]) == (1, 0)


def test_gzip_keeps_the_byte_order_mark_and_line_length_checks(tmp_path):
    plain = write_lines(tmp_path / "plain.json", [record("Before"), record("Huge", "z" * 2 * data.MAX_LINE_BYTES),
                                                  record("After")])
    compressed = gzip_file(tmp_path / "trn.json.gz", codecs.BOM_UTF8 + plain.read_bytes())
    stats = data.preprocess(compressed, tmp_path / "out")
    assert (stats["read"], stats["kept"], stats["malformed"]) == (3, 2, 1)
    assert stats["malformed_lines"][0]["line"] == 2
    assert f"over the {data.MAX_LINE_BYTES:,}-byte limit" in stats["malformed_lines"][0]["reason"]


def test_progress_bar_counts_the_decompressed_lines(tmp_path, capsys):
    compressed = gzip_file(tmp_path / "trn.json.gz", paths().raw_sample.read_bytes())
    lines = paths().raw_sample.read_bytes().count(b"\n")
    assert data.count_lines(compressed) == data.count_lines(paths().raw_sample) == lines
    stats = data.preprocess(compressed, tmp_path / "out", progress=True)
    assert stats["read"] == lines
    assert f"{lines}/{lines}" in capsys.readouterr().out


def test_a_gzip_file_cut_short_is_a_clear_error_and_leaves_no_outputs(tmp_path):
    whole = gzip.compress(paths().raw_sample.read_bytes())
    cut = tmp_path / "trn.json.gz"
    cut.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(data.InputFormatError, match=re.escape(f"{cut}: the gzip data is damaged or cut short")):
        data.preprocess(cut, tmp_path / "out")
    assert_no_outputs(tmp_path / "out")


# --- Wrong formats fail, naming the file and the likely cause ------------------------------------------------------


def zipped(content: bytes) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as packed:
        packed.writestr("trn.json", content)
    return archive.getvalue()


def tarred(content: bytes) -> bytes:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as packed:
        member = tarfile.TarInfo("trn.json")
        member.size = len(content)
        packed.addfile(member, io.BytesIO(content))
    return archive.getvalue()


@pytest.mark.parametrize("name, pack", [
    ("zip", zipped),
    ("bzip2", bz2.compress),
    ("xz", lzma.compress),
    # No zstd compressor in the standard library; only the first bytes are judged.
    ("zstd", lambda content: b"\x28\xb5\x2f\xfd" + content),
    ("tar", tarred),
    ("tar", lambda content: gzip.compress(tarred(content))),  # trn.tar.gz: gzip is read, the tar inside is named
])
def test_other_compressions_and_archives_are_named_before_anything_is_written(tmp_path, name, pack):
    source = tmp_path / "trn.json.packed"
    source.write_bytes(pack(json_lines("A", "B")))
    with pytest.raises(data.InputFormatError, match=re.escape(f"{source}: the file is {name} data")):
        data.preprocess(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rows", [2, 40])
def test_a_csv_file_is_a_clear_error_and_leaves_no_outputs(tmp_path, rows):
    source = tmp_path / "trn.csv"
    source.write_text("uid,title,content\n" + "".join(f'{row},Title {row},"{LONG_ENOUGH}"\n' for row in range(rows)))
    with pytest.raises(data.InputFormatError, match=re.escape(f"{source}: ") + ".*looks like CSV.*uid,title,content"):
        data.preprocess(source, tmp_path / "out")
    assert_no_outputs(tmp_path / "out")


@pytest.mark.parametrize("text", [
    json.dumps(record("A"), indent=2),                                   # "{" alone on the first line
    "\n".join(json.dumps(record(title), indent=2) for title in "ABC"),  # jq's default output: one object after another
    json.dumps(record("A"), indent=2).replace("{\n  ", "{", 1),          # the first field on the first line
])
def test_json_spread_over_many_lines_is_a_clear_error_and_leaves_no_outputs(tmp_path, text):
    source = tmp_path / "trn.json"
    source.write_text(text + "\n")
    with pytest.raises(data.InputFormatError, match=re.escape(f"{source}") + ".*spread over many lines"):
        data.preprocess(source, tmp_path / "out")
    assert_no_outputs(tmp_path / "out")


HALF = data.LINES_TO_JUDGE_SHARE // 2


@pytest.mark.parametrize("good, broken, fails", [
    (1, 1, False),              # one broken record beside one good one: a dirty file, processed and reported
    (1, 2, False),              # mostly broken, but too few lines for a share to be evidence
    (0, 1, True),               # no line at all is a record, however short the file
    (HALF, HALF, False),        # exactly half of enough lines: not more than half
    (HALF - 1, HALF + 1, True),  # more than half of enough lines
])
def test_a_file_fails_only_when_no_line_or_most_of_enough_lines_are_not_records(tmp_path, good, broken, fails):
    lines = [record(f"Good {number}") for number in range(good)] + [b"{oops"] * broken
    if not fails:
        stats = run(tmp_path, lines)
        assert (stats["kept"], stats["malformed"]) == (good, broken)
        assert_every_line_counted(stats)
        return
    with pytest.raises(data.InputFormatError, match=re.escape(f"{tmp_path / 'trn.json'}: ")):
        run(tmp_path, lines)
    assert_no_outputs(tmp_path / "out")


def test_mostly_malformed_error_counts_the_lines_and_explains_the_first_bad_one(tmp_path):
    good, broken = [record("Good one"), record("Good two")], [b"not json"] * data.LINES_TO_JUDGE_SHARE
    with pytest.raises(data.InputFormatError) as failure:
        run(tmp_path, good + broken)
    lines = len(good) + len(broken)
    # msgspec's own wording after "DecodeError" is its to change.
    assert str(failure.value).startswith(
        f"{tmp_path / 'trn.json'}: {len(broken)} of {lines} non-blank lines are not trn.json records; "
        "it does not look like JSON lines at all. (line 3: DecodeError: ")


@pytest.mark.parametrize("bad_line, cause", [
    (b'{"uid": "1", "title": "Cut', "broken (cut short or invalid)"),
    (b'{"id": 1, "name": "A"}', "JSON but not trn.json records"),
    (b'{"uid": "1",', "spread over many lines"),
])
def test_mostly_malformed_error_tells_broken_json_from_other_json(tmp_path, bad_line, cause):
    with pytest.raises(data.InputFormatError, match=re.escape(cause)):
        run(tmp_path, [bad_line] * data.LINES_TO_JUDGE_SHARE)


def test_a_file_of_blank_lines_is_a_clear_error(tmp_path):
    source = tmp_path / "trn.json"
    source.write_bytes(b"\n" * 3)
    with pytest.raises(data.InputFormatError, match=re.escape(f"{source}: the file has only blank lines")):
        data.preprocess(source, tmp_path / "out")
    assert_no_outputs(tmp_path / "out")


def test_a_blank_line_after_every_record_loses_nothing(tmp_path):
    # What print(json.dumps(record) + "\n", file=output) writes: half the lines blank, every record intact.
    # One more blank line at the end tips the share of all lines over half; records are what is judged.
    records = data.LINES_TO_JUDGE_SHARE
    lines = [line for number in range(records) for line in (record(f"R{number}"), b"")] + [b""]
    stats = run(tmp_path, lines)
    assert (stats["kept"], stats["blank"], stats["malformed"]) == (records, records + 1, records + 1)
    assert_every_line_counted(stats)


# --- Command line ---------------------------------------------------------------------------------------------------


def cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers.data", *arguments], capture_output=True, text=True,
                          timeout=120)


def test_cli_prints_the_stats_as_one_json_object(tmp_path):
    source = write_lines(tmp_path / "trn.json", [record("A"), record("A"), record("B", ""), b"{oops"])
    result = cli("--input", str(source), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert {key: stats[key] for key in ("read", "kept", "empty", "short", "duplicate", "malformed")} == \
        {"read": 4, "kept": 1, "empty": 1, "short": 0, "duplicate": 1, "malformed": 1}
    assert stats["malformed_lines"][0]["line"] == 4
    assert Path(stats["outputs"]["train"]).is_file() and Path(stats["outputs"]["stats"]).is_file()


@pytest.mark.parametrize("content, message", [
    (None, "no such file"), (b"", "the file is empty"), (b'[{"title": "A"}]', "one JSON array"),
    (bz2.compress(json_lines("A")), "the file is bzip2 data"),
    (b"uid,title,content\n1,A,Sturdy board book\n", "looks like CSV"),
    (json.dumps(record("A"), indent=2).encode(), "spread over many lines"),
])
def test_cli_fails_with_a_clear_message(tmp_path, content, message):
    source = tmp_path / "trn.json"
    if content is not None:
        source.write_bytes(content)
    result = cli("--input", str(source), "--output", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {source}") and message in result.stderr
    assert result.stdout == ""
    assert_no_outputs(tmp_path / "out")


def test_cli_names_a_folder_given_as_input(tmp_path):
    result = cli("--input", str(tmp_path), "--output", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path}: is a folder, expected a JSON lines file\n"


def test_cli_names_an_unreadable_file(tmp_path, monkeypatch, capsys):
    # Refused by a patched Path.open, not chmod 000: tests may run as root, who can read any file.
    source = write_lines(tmp_path / "trn.json", [record("A")])
    real_open = Path.open

    def refuse_the_input(self, *arguments, **keywords):
        if self == source:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *arguments, **keywords)

    monkeypatch.setattr(Path, "open", refuse_the_input)
    assert data.main(["--input", str(source), "--output", str(tmp_path / "out")]) == 1
    printed = capsys.readouterr()
    assert printed.err == f"error: {source}: permission denied, the file cannot be read\n"
    assert printed.out == ""


def test_cli_reads_the_gzip_file_as_amazon_titles_ships_it(tmp_path):
    source = gzip_file(tmp_path / "trn.json.gz", json_lines("A", "B", "C"))
    result = cli("--input", str(source), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert (stats["read"], stats["kept"], stats["malformed"]) == (3, 3, 0)


# --- Contract used by the other stages -----------------------------------------------------------------------------


def test_outputs_load_with_datasets(sample_stats, tmp_path):
    import datasets

    loaded = datasets.load_dataset("json", data_files=sample_stats["outputs"]["heldout"], split="train",
                                   cache_dir=str(tmp_path))
    assert loaded.column_names == list(data.PROCESSED_COLUMNS)
    assert len(loaded) == sample_stats["heldout"]


def test_load_processed_gives_train_and_heldout_datasets():
    train, heldout = data.load_processed(cpu_profile())
    assert train.column_names == heldout.column_names == list(data.PROCESSED_COLUMNS)
    assert set(DEMO_PRODUCTS) <= set(train["product"])
    assert not set(train["product"]) & set(heldout["product"])


def test_ensure_processed_is_idempotent():
    first = data.ensure_processed(cpu_profile(), progress=False)
    written = Path(first["outputs"]["train"]).stat().st_mtime_ns
    assert data.ensure_processed(cpu_profile(), progress=False) == first
    assert Path(first["outputs"]["train"]).stat().st_mtime_ns == written


# --- Notebook helpers -----------------------------------------------------------------------------------------------


def test_cleaning_example_contrasts_reference_and_ours(capsys):
    versions = data.cleaning_versions("Mog's Kittens")
    data.show_cleaning_example("Mog's Kittens")
    assert "Kerr8217s" in versions["reference (punctuation stripped first)"]["description"]
    assert "Mogs Kittens" == versions["reference (punctuation stripped first)"]["product"]
    assert "Kerr’s best–selling" in versions["ours (entities decoded first)"]["description"]
    printed = " ".join(capsys.readouterr().out.split())
    assert "Kerr8217s" in printed and "Ages 6 months–2 years." in printed


def test_split_summary_accounts_for_every_line(sample_stats):
    table = data.split_summary(sample_stats)
    dropped = table["records"].iloc[1:5].sum()
    assert table.loc["read", "records"] == dropped + table.loc["kept", "records"]


def test_length_histogram_is_saved_where_asked_and_the_committed_figure_is_untouched(sample_stats, tmp_path):
    committed = paths().figures / data.LENGTHS_FIGURE
    committed_bytes = committed.read_bytes()
    figure = data.plot_description_lengths(cpu_profile(), figures_dir=tmp_path)
    assert (tmp_path / data.LENGTHS_FIGURE).is_file()
    assert committed.read_bytes() == committed_bytes
    assert figure.axes[0].get_title().startswith(f"{sample_stats['read'] - sample_stats['malformed']:,} descriptions")
