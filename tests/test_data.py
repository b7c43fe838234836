"""Preprocessing promises: entities decoded not stripped, thresholds, duplicates, a real hold-out, bad input."""
import json
import subprocess
import sys
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
    # A fixed value: Python's own hash() would change with PYTHONHASHSEED and reshuffle the split.
    assert data.title_hash("Mog's Kittens") == int.from_bytes(
        __import__("hashlib").blake2b(b"Mog's Kittens", digest_size=8).digest(), "big")
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


@pytest.mark.parametrize("content, message", [(None, "no such file"), (b"", "the file is empty"),
                                              (b'[{"title": "A"}]', "one JSON array")])
def test_cli_fails_with_a_clear_message(tmp_path, content, message):
    source = tmp_path / "trn.json"
    if content is not None:
        source.write_bytes(content)
    result = cli("--input", str(source), "--output", str(tmp_path / "out"))
    assert result.returncode != 0
    assert str(source) in result.stderr and message in result.stderr
    assert result.stdout == ""


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


def test_length_histogram_is_saved(sample_stats):
    figure = data.plot_description_lengths(cpu_profile())
    assert (paths().figures / data.LENGTHS_FIGURE).is_file()
    assert figure.axes[0].get_title().startswith(f"{sample_stats['read'] - sample_stats['malformed']:,} descriptions")
