"""The generated sample: deterministic, in the exact trn.json format, and as untidy as the real file."""
import json
import subprocess
import sys
from collections import Counter

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


def test_every_description_states_its_facts_and_catalogue_facts_are_not_in_the_title():
    """A coherent product: its title facts are in its title and its description, its catalogue facts only in its
    description (the 'Okavango Bed Sheet Set needs 4 AA batteries' of an older generator fails this)."""
    products = [(uid, product) for uid, product, _, _ in synthetic.generate_products(synthetic.SAMPLE_RECORDS)
                if product.title_facts or product.catalogue_facts]
    assert len(products) > 2000
    for uid, product in products:
        for fact in product.title_facts:
            assert synthetic.states(product.title, fact) and synthetic.states(product.content, fact), (uid, fact)
        for fact in product.catalogue_facts:
            assert synthetic.states(product.content, fact), (uid, fact)
            assert not synthetic.states(product.title, fact), (uid, fact)
        assert product.catalogue_facts, uid


def test_committed_facts_are_what_the_generator_writes(tmp_path):
    synthetic.write_sample(tmp_path / "trn.json", synthetic.SAMPLE_RECORDS)
    assert (tmp_path / "trn_facts.json").read_bytes() == synthetic.facts_path(paths().raw_sample).read_bytes()
    facts = synthetic.load_facts()
    assert facts["0933697214"]["catalogue_facts"] == ("clarence larkin", "35", "1919", "208 pages", "paperback")


def test_a_sample_without_a_facts_file_has_no_facts(tmp_path):
    (tmp_path / "trn.json").write_text("")
    assert synthetic.load_facts(tmp_path / "trn.json") == {}


def test_a_duplicate_listing_repeats_a_whole_product():
    listings = Counter((product.title, product.content)
                       for _, product, _, _ in synthetic.generate_products(synthetic.SAMPLE_RECORDS)
                       if len(product.content) >= 100)
    assert sum(count - 1 for count in listings.values()) > 100  # scraped twice: title and description alike
