"""The generated sample: deterministic, in the exact trn.json format, and as untidy as the real file."""
import json
import subprocess
import sys
from collections import Counter

import pytest

from helpers import synthetic
from helpers.config import DEMO_PRODUCTS, paths

TRN_FIELDS = ["uid", "title", "content", "target_ind", "target_rel"]


def generated(n_records: int = synthetic.SAMPLE_RECORDS, seed: int = synthetic.DEFAULT_SEED) -> list[dict]:
    return list(synthetic.generate_records(n_records, seed))


def test_same_seed_writes_the_same_bytes(tmp_path):
    first = synthetic.write_sample(tmp_path / "a.json", 300, seed=7).read_bytes()
    second = synthetic.write_sample(tmp_path / "b.json", 300, seed=7).read_bytes()
    other = synthetic.write_sample(tmp_path / "c.json", 300, seed=8).read_bytes()
    assert first == second != other


def test_committed_sample_is_what_the_generator_writes(tmp_path):
    regenerated = synthetic.write_sample(tmp_path / "trn.json", synthetic.SAMPLE_RECORDS)
    assert regenerated.read_bytes() == paths().raw_sample.read_bytes()
    assert paths().raw_sample.stat().st_size < 5 * 2**20


def test_every_line_has_the_trn_json_fields_and_types():
    for line in paths().raw_sample.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert list(record) == TRN_FIELDS
        assert all(isinstance(record[key], str) for key in ("uid", "title", "content"))
        assert len(record["target_ind"]) == len(record["target_rel"]) > 0


def test_demo_products_come_first_with_the_reference_contents():
    records = generated(len(synthetic.DEMO_RECORDS))
    assert [record["title"] for record in records[:4]] == list(DEMO_PRODUCTS)
    assert "Judith Kerr&#8217;s best&#8211;selling" in records[1]["content"]
    assert "Ages 6 months&#8211;2 years." in records[1]["content"]
    assert "ages 2-8 years" in records[0]["content"]


def test_near_neighbours_of_every_demo_product_exist():
    titles = [record["title"] for record in generated(len(synthetic.DEMO_RECORDS))]
    for marker in ("Girls Ballet Tutu Neon", "Mog", "Prophet", "The Book of"):
        assert sum(marker in title for title in titles) >= 2, marker


def test_sample_is_as_untidy_as_the_real_file():
    records = generated()
    contents = [record["content"] for record in records]
    too_short = sum(len(content) < 100 for content in contents) / len(records)
    assert 0.40 < too_short < 0.52  # the reference dropped 45.9% of the real file
    for entity in ("&#8217;", "&#8211;", "&amp;", "&quot;", "&#x2019;"):
        assert any(entity in content for content in contents), entity
    assert any(count > 1 for count in Counter(record["title"] for record in records).values())
    assert any(not record["title"].isascii() for record in records)
    assert any(len(content) > 2000 for content in contents)
    assert any("  " in content or "\n" in content for content in contents)


def test_uids_are_unique():
    uids = [record["uid"] for record in generated()]
    assert len(set(uids)) == len(uids)


def test_cli_writes_the_requested_number_of_records(tmp_path):
    output = tmp_path / "trn.json"
    result = subprocess.run([sys.executable, "-m", "helpers.synthetic", "--records", "120", "--output", str(output)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(output.read_text(encoding="utf-8").splitlines()) == 120


def generated_records_with_facts() -> list[tuple[str, synthetic.Product]]:
    demo_uids = {uid for uid, *_ in synthetic.DEMO_RECORDS}
    return [(uid, product) for uid, product, _, _ in synthetic.generate_products(synthetic.SAMPLE_RECORDS)
            if product.facts and uid not in demo_uids]


def values(product: synthetic.Product, attribute: str) -> set[str]:
    return {fact.value for fact in product.facts if fact.attribute == attribute}


def test_records_agree_with_themselves_per_category():
    """Pages only for books, and as many as the format holds; sizes that fit the ages they state; media with their
    media's facts. (The old generator wrote "Board book, 761 pages" and "Toddler 2T ... fits ages 9-13".)"""
    products = generated_records_with_facts()
    assert len(products) > 2500
    book_formats = {synthetic.fact_form(name) for name in synthetic.BOOK_FORMATS}
    for uid, product in products:
        formats, pages, sizes, ages = (values(product, name) for name in ("format", "pages", "size", "age"))
        if pages:
            assert formats & book_formats, uid
        if "board book" in formats:
            assert all(int(count) <= 30 for count in pages), uid
        if formats & {"hardcover", "paperback"} and not ages:
            assert all(int(count) >= 80 for count in pages), uid
        for size in sizes:
            if size.startswith("child"):
                assert ages == {size.removeprefix("child ")}, uid
            elif size.startswith(("toddler", "youth")):
                assert ages and all(int(age.split("-")[1]) <= 9 for age in ages), uid
            else:
                assert not ages, (uid, size, ages)  # adult sizes fit no children's ages
        if formats & {"audio cd", "vinyl lp"}:
            (tracks,), (minutes,) = values(product, "tracks"), values(product, "minutes")
            assert 3 * int(tracks) <= int(minutes) <= 5 * int(tracks) + 4, uid
        if formats & {"dvd", "blu-ray"}:
            assert values(product, "rating") and values(product, "minutes"), uid
        if values(product, "batteries") - {"none"}:
            assert any(toy in product.title for toy in ("Remote Control Car", "Train Set", "Science Kit")), uid


def test_every_generated_record_has_facts_only_its_description_holds():
    for uid, product in generated_records_with_facts():
        assert product.catalogue_facts, uid


def test_committed_facts_are_what_the_generator_writes(tmp_path):
    synthetic.write_sample(tmp_path / "trn.json", synthetic.SAMPLE_RECORDS)
    assert (tmp_path / "trn_facts.json").read_bytes() == synthetic.facts_path(paths().raw_sample).read_bytes()
    revelation = synthetic.load_facts()["0933697214"]
    assert {(fact.attribute, fact.value) for fact in revelation} == {
        ("person", "clarence larkin"), ("charts", "35"), ("year", "1919"), ("pages", "208"), ("format", "paperback")}
    assert not any(fact.in_title for fact in revelation)


def test_a_broken_facts_file_names_the_file_and_line(tmp_path):
    (tmp_path / "trn.json").write_text("")
    (tmp_path / "trn_facts.json").write_text('{"uid": "1", "facts": []}\n{"uid": "2", "title_facts": []}\n')
    with pytest.raises(ValueError, match=r"trn_facts.json, line 2"):
        synthetic.load_facts(tmp_path / "trn.json")


def test_a_sample_without_a_facts_file_has_no_facts(tmp_path):
    (tmp_path / "trn.json").write_text("")
    assert synthetic.load_facts(tmp_path / "trn.json") == {}


def test_a_duplicate_listing_repeats_a_whole_product():
    listings = Counter((product.title, product.content)
                       for _, product, _, _ in synthetic.generate_products(synthetic.SAMPLE_RECORDS)
                       if len(product.content) >= 100)
    assert sum(count - 1 for count in listings.values()) > 100  # scraped twice: title and description alike
