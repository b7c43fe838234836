"""A deterministic AmazonTitles-style sample in the exact ``trn.json`` format, and every product's typed facts.

The real AmazonTitles-1.3MM ``trn.json`` (2,248,619 JSON lines of uid, title, content, target_ind, target_rel)
cannot be downloaded offline, so the course ships a generated sample with the same shape and the same problems:
HTML entities, empty and short contents (the reference dropped about 46%), duplicate titles, unicode and a few
very long descriptions.

Every described product is a coherent catalogue record: pages only for books (a board book has a few dozen, a
novel hundreds), clothing sizes that agree with the ages they fit, toys whose pieces, materials and batteries
belong to the toy, media formats with their media. Each record keeps its attributes as typed facts
(``Fact``: attribute, value, and whether the title carries it), written beside the sample; helpers.facts reads
the same attributes back out of any text, so an answer can be checked fact by fact against its product's record.

The four demo products of the reference solution come first, with contents modelled on its write-up, followed
by near neighbours (other tutu colours, other Mog books, other Bible books, other Gibran titles) so that
retrieval has something to confuse.

    python -m helpers.synthetic --records 5000 --output data/raw/trn.json
"""
from __future__ import annotations

import argparse
import html
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec

from helpers.config import paths
from helpers.files import replaced_on_success

FULL_SIZE_RECORDS = 2_248_619  # records in the real trn.json, as the reference solution counted them
SAMPLE_RECORDS = 5_000  # the committed sample: 2,477 records survive preprocessing, ~3 MB on disk
DEFAULT_SEED = 1_360_000

# Shares of generated records, tuned so that about 46% is dropped as in the real file.
EMPTY_SHARE = 0.29
SHORT_SHARE = 0.17
DUPLICATE_SHARE = 0.03
LONG_SHARE = 0.01
RECENT_TITLES_KEPT = 512  # duplicates repeat a recent title: bounded memory even for the full-size file

_DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
                         "\u2019": "'", "\u2018": "'", "\u00a0": " "})


def fact_form(text: str) -> str:
    """How facts are stored and matched: entities decoded, lower case, one kind of dash and apostrophe, single spaces."""
    return " ".join(html.unescape(text).translate(_DASHES).lower().split())


@dataclass(frozen=True, order=True)
class Fact:
    """One attribute of a product as its record holds it: ``attribute`` names what it is ("pages", "age",
    "material" …, helpers.facts.ATTRIBUTES), ``value`` is its canonical form ("208", "4-8", "beech wood"), and
    ``in_title`` says whether the title carries it (a model can copy it from the prompt) or only the description
    does (a model can only know it from training or from a retrieved record)."""

    attribute: str
    value: str
    in_title: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.attribute, self.value


def facts_of(in_title: dict[str, str | tuple[str, ...]], in_description: dict[str, str | tuple[str, ...]]) -> tuple[Fact, ...]:
    """Facts from {attribute: value or values}, title facts first."""
    facts = []
    for is_title, attributes in ((True, in_title), (False, in_description)):
        for attribute, values in attributes.items():
            for value in (values,) if isinstance(values, str) else values:
                facts.append(Fact(attribute, fact_form(value), is_title))
    return tuple(facts)


# --- The demo products and their near neighbours ------------------------------------------------------------------

# (uid, title, content, facts) of the reference's demo products and their near neighbours, in file order.
DEMO_RECORDS: tuple[tuple[str, str, str, tuple[Fact, ...]], ...] = (
    ("0000031895", "Girls Ballet Tutu Neon Blue",
     "Dance tutu for girls ages 2-8 years. Perfect for dance practice, recitals and performances, costumes or "
     "just for fun!",
     facts_of({"color": "neon blue"}, {"age": "2-8"})),
    ("0001360000", "Mog's Kittens",
     "Judith Kerr&#8217;s best&#8211;selling adventures of Mog, that endearing (and exasperating) cat, have "
     "entertained children for more than 30 years. Now infants and toddlers can meet her in sturdy little board "
     "books with bright, simple pictures. Ages 6 months&#8211;2 years.",
     facts_of({}, {"person": "judith kerr", "format": "board book", "age": "6 months-2 years"})),
    ("0394404289", "The Prophet",
     "A mysterious prophet walks the sands and, before his departure, answers the questions of the heart: love, "
     "marriage, children, work. Kahlil Gibran&#8217;s 26 poetic, moving aphorisms, &quot;divinely inspired&quot; "
     "for millions of readers. --Brian Bruya. This text refers to the Hardcover edition.",
     facts_of({}, {"person": ("kahlil gibran", "brian bruya"), "aphorisms": "26", "format": "hardcover"})),
    ("0933697214", "The Book of Revelation",
     "Clarence Larkin&#8217;s verse&#8211;by&#8211;verse study of Revelation, the last book of the New "
     "Testament, with 35 prophetic charts drawn by Larkin himself: the seals, trumpets and vials. First published "
     "in 1919; 208 pages. This text refers to the Paperback edition.",
     facts_of({}, {"person": "clarence larkin", "charts": "35", "year": "1919", "pages": "208",
                   "format": "paperback"})),
    ("B0007TUTU2", "Girls Ballet Tutu Neon Pink",
     "Neon pink, high quality 3 layer ballet tutu 12 inches in length. Soft nylon tulle on an elastic waistband "
     "that stretches to fit. Fits girls ages 4&#8211;10.",
     facts_of({"color": "neon pink"}, {"layers": "3", "length": "12", "material": "nylon tulle", "age": "4-10"})),
    ("B0007TUTU3", "Girls Ballet Tutu Neon Green",
     "Bright neon green tutu with 4 layers of tulle, 11 inches long, satin ribbon bow at the waist. For toddlers "
     "ages 1&#8211;3 years; hand wash cold.",
     facts_of({"color": "neon green"}, {"layers": "4", "length": "11", "age": "1-3", "care": "hand wash cold"})),
    ("B0007TUTU4", "Girls Ballet Tutu Neon Purple",
     "Neon purple 2 layer tutu skirt, 10 inches long, with a hidden drawstring waist. Sized for girls ages "
     "3&#8211;6; 100% polyester, machine washable.",
     facts_of({"color": "neon purple"}, {"layers": "2", "length": "10", "age": "3-6", "material": "polyester"})),
    ("B0007TUTU5", "Girls Ballet Tutu Zebra Print",
     "Zebra print ballet tutu with 5 layers of tulle and a matching headband, 13 inches long. Recommended for "
     "girls ages 6&#8211;12 &amp; great for dance recitals.",
     facts_of({"color": "zebra print"}, {"layers": "5", "length": "13", "age": "6-12"})),
    ("0439874874", "Delphie and the Birthday Show (Magic Ballerina, Book 6)",
     "Delphie&#8217;s friend Brianna is having a birthday party, and Delphie is in charge of the show. Darcey "
     "Bussell&#8217;s Magic Ballerina series, book 6 of 6: 128 pages, ages 6&#8211;9, first published in 2008.",
     facts_of({"series": "book 6"}, {"person": "darcey bussell", "pages": "128", "age": "6-9", "year": "2008"})),
    ("0007171293", "Mog and the V.E.T. (Mog the Cat Books)",
     "Praise for Mog the Forgetful Cat: &#x2018;Grandparents are likely to get as much fun out of seeing it again "
     "as the new generation of fans just learning to read&#x2019; Choice Magazine. &#x2018;A lovely book for all "
     "Mog&#8211;fanciers&#x2019; The Observer. Mog swallows a bee and has to visit the vet: 32 pages, ages "
     "3&#8211;7, first published in 1995.",
     facts_of({}, {"pages": "32", "age": "3-7", "year": "1995"})),
    ("0007171277", "Mog on Fox Night",
     "Praise for Goodbye Mog: &#x2018;Kerr&#x2019;s warmth, humour and honesty make this an engaging "
     "introduction to a difficult topic&#x2019; Financial Times. On a snowy night Mog meets three foxes in the "
     "garden. Picture book, 32 pages, ages 3&#8211;6, first published in 1993.",
     facts_of({}, {"pages": "32", "age": "3-6", "year": "1993"})),
    ("0007149654", "Mog the Forgetful Cat",
     "The very first Mog story, published in 1970: Mog forgets she has a cat flap, forgets she has eaten her "
     "supper and finally catches a burglar. Judith Kerr&#8217;s classic picture book, 40 pages, ages 2&#8211;5.",
     facts_of({}, {"year": "1970", "person": "judith kerr", "pages": "40", "age": "2-5"})),
    ("0007149700", "Goodbye Mog",
     "Judith Kerr&#8217;s gentle story about the death of Mog, the much&#8211;loved family cat, and the new kitten who "
     "arrives at the Thomas house. 32 pages, ages 4&#8211;8, first published in 2002; over 200,000 copies sold.",
     facts_of({}, {"person": "judith kerr", "pages": "32", "age": "4-8", "year": "2002", "copies": "200000"})),
    ("0007215924", "Mog's Christmas",
     "It is Christmas Eve and Mog hates the noise and the tree that walks into the house, so she climbs onto the "
     "snowy roof. Board book edition, 24 pages, ages 1&#8211;4, first published in 1976.",
     facts_of({}, {"format": "board book", "pages": "24", "age": "1-4", "year": "1976"})),
    ("0007215932", "Mog's Bad Thing",
     "Mog has been doing a bad thing, and the Thomas family cannot work out who is to blame. Hardcover, 32 pages, "
     "ages 3&#8211;6, first published in 2000 &amp; still a favourite at bedtime.",
     facts_of({}, {"format": "hardcover", "pages": "32", "age": "3-6", "year": "2000"})),
    ("0394436121", "The Garden of the Prophet",
     "Kahlil Gibran&#8217;s sequel to The Prophet, completed after his death in 1931 by Barbara Young: Almustafa "
     "returns to his island and speaks of pity, space and the nature of God. 72 pages, 1933 edition.",
     facts_of({}, {"person": ("kahlil gibran", "barbara young"), "year": ("1931", "1933"), "pages": "72"})),
    ("0394430727", "Jesus, the Son of Man",
     "Kahlil Gibran&#8217;s portrait of Jesus told by 77 contemporaries of his, friends and enemies alike. "
     "First published in 1928; 216 pages with 12 drawings by Gibran himself.",
     facts_of({}, {"person": "kahlil gibran", "contemporaries": "77", "year": "1928", "pages": "216",
                   "drawings": "12"})),
    ("0394432002", "The Madman: His Parables and Poems",
     "Kahlil Gibran&#8217;s first book in English, published in 1918: 34 short parables and poems about the mask "
     "we show the world. 71 pages, illustrated with three drawings by the author.",
     facts_of({}, {"person": "kahlil gibran", "year": "1918", "parables": "34", "pages": "71"})),
    ("0933697125", "The Book of Daniel",
     "Clarence Larkin&#8217;s study of the prophecies of Daniel: the four beasts, the seventy weeks and the "
     "image of Nebuchadnezzar. 278 pages with 16 charts, first published in 1929.",
     facts_of({}, {"person": "clarence larkin", "pages": "278", "charts": "16", "year": "1929"})),
    ("1585161004", "The Book of Genesis",
     "A chapter&#8211;by&#8211;chapter commentary on Genesis, the first book of the Bible, for small groups: 50 chapters "
     "in 12 weekly sessions, with maps of Abraham&#8217;s journeys. Paperback, 164 pages, 2004.",
     facts_of({}, {"chapters": "50", "weekly sessions": "12", "format": "paperback", "pages": "164",
                   "year": "2004"})),
    ("1585161012", "The Book of Psalms",
     "All 150 psalms in the King James Version, set in large type with a ribbon marker and a topical index. "
     "Leather&#8211;bound, 320 pages, 6 x 9 inches.",
     facts_of({}, {"psalms": "150", "material": "leather", "pages": "320", "dimensions": "6 x 9"})),
    ("1585161020", "The Book of Job",
     "Stephen Mitchell&#8217;s translation of the Book of Job, with an introduction on suffering and justice. "
     "Paperback, 129 pages, first published in 1987 &amp; revised in 1992.",
     facts_of({}, {"person": "stephen mitchell", "format": "paperback", "pages": "129", "year": ("1987", "1992")})),
    ("0933697036", "Dispensational Truth or God's Plan and Purpose in the Ages",
     "Clarence Larkin, born in 1850, was an engineer before he was ordained as a Baptist minister in 1884. He "
     "spent three years drawing the 90 charts of Dispensational Truth, first published in 1918; he died in 1924. "
     "This text refers to the Paperback edition.",
     facts_of({}, {"person": "clarence larkin", "year": ("1850", "1884", "1918", "1924"), "charts": "90",
                   "format": "paperback"})),
)
# People of the demo records, for helpers.facts: a name is a fact only when its whole name is written.
DEMO_PEOPLE = ("Judith Kerr", "Kahlil Gibran", "Brian Bruya", "Clarence Larkin", "Darcey Bussell", "Barbara Young",
               "Stephen Mitchell")

# --- The generator's vocabulary (helpers.facts reads facts back with the same words) --------------------------------

FIRST_NAMES = ("Judith", "Anna", "Carlos", "Mei", "Oliver", "Zoë", "Björn", "Amélie", "Rahul", "Sofia", "Liam",
               "Chiara", "Tomás", "Hannah", "Kenji", "Noor", "Elena", "Marcus", "Ingrid", "Dmitri", "Aisha",
               "François", "Grace", "Mateo", "Ruth", "Søren", "Priya", "Jonas", "Clara", "Yusuf")
LAST_NAMES = ("Kerr", "Whitfield", "Moreau", "Okafor", "Lindqvist", "Tanaka", "García", "O'Brien", "Novak",
              "Haddad", "Ferreira", "Schäfer", "Kowalski", "Delgado", "Brennan", "Iwasaki", "Mbeki", "Rossi",
              "Petrov", "Andersen", "Calloway", "Nguyen", "Fitzgerald", "Müller", "Abernathy", "Castellano")
ADJECTIVES = ("Silent", "Golden", "Hidden", "Last", "Little", "Forgotten", "Brave", "Secret", "Wild", "Quiet",
              "Broken", "Crimson", "Distant", "Endless", "Gentle", "Hollow", "Lonely", "Midnight", "Northern",
              "Painted", "Restless", "Scarlet", "Shining", "Sleeping", "Stolen", "Summer", "Winter", "Wandering",
              "Velvet", "Iron", "Paper", "Glass", "Salt", "Amber", "Copper", "Emerald", "Frozen", "Burning")
NOUNS = ("Garden", "River", "Lighthouse", "Kingdom", "Orchard", "Harbor", "Mountain", "Library", "Forest",
         "Island", "Letter", "Promise", "Compass", "Lantern", "Map", "Bridge", "Clockmaker", "Daughter", "Sea",
         "Castle", "Meadow", "Window", "Journey", "Station", "Shadow", "Storm", "Violin", "Tide", "Valley",
         "Cathedral", "Fox", "Owl", "Whale", "Dragon", "Sparrow", "Tiger", "Rabbit", "Bear", "Kitten", "Wolf")

# Books: (kind, formats with their page ranges, ages or None). A board book has a few dozen pages, a novel hundreds.
BOOK_SHAPES = (
    ("picture book", {"Board book": (10, 30), "Hardcover": (24, 48), "Paperback": (24, 48)}, (1, 7)),
    ("collection of stories", {"Paperback": (96, 320), "Hardcover": (120, 320), "Library Binding": (96, 320)}, (7, 12)),
    ("novel", {"Paperback": (180, 620), "Hardcover": (220, 720), "Mass Market Paperback": (200, 560)}, None),
    ("memoir", {"Paperback": (180, 480), "Hardcover": (220, 520)}, None),
    ("history", {"Paperback": (240, 900), "Hardcover": (280, 900)}, None),
    ("cookbook", {"Hardcover": (160, 400), "Paperback": (140, 360)}, None),
    ("field guide", {"Paperback": (120, 480)}, None),
    ("biography", {"Paperback": (220, 640), "Hardcover": (260, 760)}, None),
    ("thriller", {"Paperback": (260, 560), "Mass Market Paperback": (280, 520)}, None),
    ("study guide", {"Paperback": (80, 260)}, None),
)
BOOK_FORMATS = ("Board book", "Hardcover", "Paperback", "Mass Market Paperback", "Library Binding")

COLORS = ("Neon Blue", "Neon Pink", "Neon Green", "Neon Purple", "Zebra Print", "Black", "White", "Navy", "Red",
          "Lavender", "Royal Blue", "Hot Pink", "Turquoise", "Burgundy", "Mint", "Coral", "Charcoal", "Ivory",
          "Leopard Print", "Rainbow", "Gold")
# Who wears it → the sizes made for them, each with the ages it fits (None: adult sizes).
APPAREL_SIZES = {
    "Toddler": {"Toddler 2T": (1, 2), "Toddler 3T": (2, 3), "Toddler 4T": (3, 4)},
    "Girls": {"Child 4-6": (4, 6), "Child 8-10": (8, 10), "Child 12-14": (12, 14)},
    "Boys": {"Child 4-6": (4, 6), "Child 8-10": (8, 10), "Child 12-14": (12, 14)},
    "Kids": {"Child 4-6": (4, 6), "Child 8-10": (8, 10), "Child 12-14": (12, 14)},
    "Womens": {"XS": None, "S": None, "M": None, "L": None, "XL": None},
    "Mens": {"S": None, "M": None, "L": None, "XL": None},
    "Unisex Adult": {"XS": None, "S": None, "M": None, "L": None, "XL": None},
}
SHOE_SIZES = {
    "Toddler": {"Toddler 8": (2, 3), "Toddler 9": (2, 4), "Toddler 10": (3, 4)},
    "Girls": {"Youth 1": (6, 7), "Youth 2": (7, 8), "Youth 3": (8, 9)},
    "Boys": {"Youth 1": (6, 7), "Youth 2": (7, 8), "Youth 3": (8, 9)},
    "Kids": {"Youth 1": (6, 7), "Youth 2": (7, 8), "Youth 3": (8, 9)},
    "Womens": {"Womens 6": None, "Womens 7": None, "Womens 8": None, "Womens 9": None},
    "Mens": {"Mens 8": None, "Mens 9": None, "Mens 10": None, "Mens 11": None},
    "Unisex Adult": {"Womens 7": None, "Mens 9": None},
}
# Garments with the adult length range in inches (None: no length), and the materials they are made of.
GARMENTS = {
    "Dance Skirt": ((12, 18), ("nylon tulle", "polyester and elastane", "microfiber")),
    "Chiffon Skirt": ((14, 22), ("polyester chiffon", "microfiber")),
    "Yoga Leggings": ((24, 30), ("nylon and spandex", "organic bamboo jersey", "polyester and elastane")),
    "Jazz Pants": ((26, 32), ("cotton&#8211;spandex blend", "nylon and spandex")),
    "Lyrical Dress": ((30, 40), ("stretch velvet", "polyester chiffon", "microfiber")),
    "Warm-Up Shorts": ((4, 7), ("100% cotton", "organic bamboo jersey")),
    "Ballet Leotard": (None, ("nylon and spandex", "100% cotton", "stretch velvet")),
    "Camisole Leotard": (None, ("nylon and spandex", "cotton&#8211;spandex blend")),
    "Unitard": (None, ("nylon and spandex", "polyester and elastane")),
    "Wrap Sweater": (None, ("merino wool", "100% cotton")),
}
SHOES = {
    "Tap Shoes": ("genuine leather",),
    "Ballet Slippers": ("genuine leather", "canvas with a split suede sole"),
    "Character Shoes": ("genuine leather", "microfiber"),
    "Hip Hop Sneakers": ("canvas with a split suede sole", "genuine leather"),
}
WEARER_NOUNS = {"Toddler": "toddlers", "Girls": "girls", "Boys": "boys", "Kids": "kids", "Womens": "women",
                "Mens": "men", "Unisex Adult": "adults"}
CHILD_LENGTH_SHARE = {"Toddler": 0.4, "Girls": 0.6, "Boys": 0.6, "Kids": 0.6}
CLOTHING_CARE = ("machine wash cold", "hand wash only", "tumble dry low")

TOY_BRANDS = ("Lumina", "Oakridge", "TinkerTown", "Brightbox", "Kidoodle", "Maple & Moss", "Zippo Zoo",
              "Crème de la Play", "Pip & Pebble", "Wunderbau")
# Toy → (pieces it comes in or None, youngest age it is for, materials, AA batteries it may need).
TOYS = {
    "Wooden Building Blocks": ((24, 36, 48, 60, 100), (1, 3), ("FSC&#8211;certified beech wood",), (0,)),
    "Magnetic Tiles": ((32, 60, 100, 120), (3, 5), ("BPA&#8211;free plastic",), (0,)),
    "Puzzle": ((24, 48, 100, 250, 500, 1000), (3, 12), ("recycled cardboard",), (0,)),
    "Train Set": ((20, 36, 50, 80), (3, 5), ("FSC&#8211;certified beech wood", "die&#8211;cast metal"), (0, 2)),
    "Stacking Rings": ((6, 8, 10), (1, 2), ("FSC&#8211;certified beech wood", "BPA&#8211;free plastic"), (0,)),
    "Marble Run": ((40, 60, 120, 150), (4, 8), ("BPA&#8211;free plastic", "FSC&#8211;certified beech wood"), (0,)),
    "Tea Party Set": ((12, 18, 24), (3, 6), ("BPA&#8211;free plastic", "porcelain"), (0,)),
    "Craft Kit": ((50, 100, 250), (5, 9), ("recycled cardboard", "wool felt"), (0,)),
    "Dinosaur Figures": ((6, 12, 24), (3, 6), ("BPA&#8211;free plastic",), (0,)),
    "Board Game": ((36, 60, 100), (6, 10), ("recycled cardboard", "FSC&#8211;certified beech wood"), (0,)),
    "Plush Bear": (None, (1, 3), ("soft plush polyester",), (0,)),
    "Kite": (None, (6, 8), ("ripstop nylon",), (0,)),
    "Xylophone": (None, (1, 3), ("FSC&#8211;certified beech wood",), (0,)),
    "Remote Control Car": (None, (6, 10), ("BPA&#8211;free plastic", "die&#8211;cast metal"), (2, 4)),
    "Dollhouse": (None, (3, 5), ("FSC&#8211;certified beech wood",), (0,)),
    "Science Kit": (None, (8, 12), ("BPA&#8211;free plastic",), (0, 2)),
}

ARTISTS = ("The Velvet Orchard", "Marta Solís", "Northern Lights Quartet", "DJ Kōji", "Björk Halvorsen",
           "The Copper Foxes", "Ella Brightwater", "Los Hermanos Ruiz", "Café Tacvba Tribute Band", "Sam O'Neill")
GENRES = ("jazz", "folk", "classical", "indie rock", "bossa nova", "blues", "soul", "bluegrass", "ambient", "pop")
MUSIC_FORMATS = ("Audio CD", "Vinyl LP")
MOVIE_FORMATS = ("DVD", "Blu-ray")
MOVIE_RATINGS = ("G", "PG", "PG-13", "R", "NR")
DIRECTORS = ("Agnès Varga", "Hiro Matsuda", "Paul Keane", "Lucía Ortega", "Frank Delaney", "Ingmar Solberg")

HOME_BRANDS = ("Hearthstone", "Nordkök", "Casa Bella", "Ironleaf", "Sunbeam Lane", "Pure & Simple", "Okavango",
               "Belle Époque")
# Item → (materials it is made of, sizes it is sold in (width, depth ranges), sets it is sold in, how it is cared for).
# A cotton kettle or a dishwasher-safe lamp would teach the model nonsense.
HOME_ITEMS = {
    "Tea Kettle": (("stainless steel", "enamelled cast iron", "borosilicate glass"), ((6, 9), (6, 9)), (1,),
                   ("Hand wash only",)),
    "Dutch Oven": (("enamelled cast iron", "stainless steel", "stoneware"), ((9, 13), (9, 13)), (1,),
                   ("Hand wash only", "Dishwasher safe")),
    "Throw Blanket": (("Egyptian cotton", "merino wool", "bamboo"), ((50, 60), (60, 80)), (1,),
                      ("Machine wash cold",)),
    "Table Lamp": (("brushed brass", "stoneware", "acacia wood"), ((6, 10), (6, 10)), (1, 2),
                   ("Wipe clean with a damp cloth",)),
    "Cutting Board": (("acacia wood", "bamboo", "walnut"), ((12, 20), (8, 14)), (1, 2), ("Hand wash only",)),
    "Storage Baskets": (("hand&#8211;woven seagrass", "bamboo", "cotton rope"), ((10, 16), (10, 16)), (2, 3, 4),
                        ("Wipe clean with a damp cloth",)),
    "Bath Towels": (("Egyptian cotton", "bamboo", "Turkish cotton"), ((27, 30), (52, 58)), (2, 4, 6),
                    ("Machine wash cold",)),
    "Wall Clock": (("brushed brass", "acacia wood", "stainless steel"), ((10, 16), (2, 3)), (1,),
                   ("Wipe clean with a damp cloth",)),
    "French Press": (("borosilicate glass", "stainless steel"), ((4, 6), (4, 6)), (1,), ("Dishwasher safe",)),
    "Spice Rack": (("bamboo", "acacia wood", "stainless steel"), ((12, 18), (4, 6)), (1,),
                   ("Wipe clean with a damp cloth",)),
    "Knife Block": (("acacia wood", "bamboo", "walnut"), ((4, 6), (8, 10)), (1,), ("Wipe clean with a damp cloth",)),
    "Bed Sheet Set": (("Egyptian cotton", "bamboo", "linen"), ((60, 80), (80, 84)), (1,), ("Machine wash cold",)),
    "Candle Holders": (("brushed brass", "borosilicate glass", "stoneware"), ((3, 5), (3, 5)), (2, 3, 4),
                       ("Wipe clean with a damp cloth",)),
    "Picture Frames": (("acacia wood", "brushed brass", "walnut"), ((5, 11), (7, 14)), (2, 3, 4),
                       ("Wipe clean with a damp cloth",)),
    "Coffee Mugs": (("stoneware", "borosilicate glass", "enamelled steel"), ((3, 4), (3, 4)), (2, 4, 6),
                    ("Dishwasher safe",)),
}

# Contents the reference dropped as too short: realistic fragments, all under 100 characters.
SHORT_CONTENTS = ("Paperback", "Brand new. Ships fast!", "See description above.", "Used - Good",
                  "Great gift &amp; fun for all ages!", "Amazon.com", "Book by {first} {last}",
                  "Size {size}. {material}.", "{pages} pages.", "Audio CD &#8211; {year}", "Import.",
                  "A {kind} by {first} {last}, {year}.", "DVD &#8211; Region 1", "Color: {color}",
                  "Package of {count}.", "&quot;{adjective} {noun}&quot; &#8212; {year}")
# Generic marketing sentences appended to descriptions: real contents are longer than their facts. None of them
# states a fact (no number, size, material, colour or name): they must not contradict the record they end.
BLURBS = ("A perfect gift for birthdays, holidays &amp; every day in between.",
          "Customers love the quality&#8212;and so will you.",
          "&quot;Simply the best we have tried,&quot; says one of many happy reviewers.",
          "Designed with care and tested by families who know what works.",
          "Makes a wonderful addition to any collection.")
MAX_BLURBS = 1
# The very long contents (LONG_SHARE) repeat reviews and notes: many words and no further facts.
LONG_PARAGRAPH = ("Reviewers called it &quot;{adjective_lower} and unforgettable&quot;, and readers around the world "
                  "agreed. Every chapter comes with notes, maps and an index, and the afterword is worth the wait.")


# A material's fact is what it is made of, without the qualifiers a listing adds: "FSC-certified beech wood" is
# beech wood, and an answer that says "beech wood" states the record's material.
MATERIAL_QUALIFIERS = ("100% ", "fsc-certified ", "bpa-free ", "recycled ", "die-cast ", "soft ", "hand-woven ",
                       "genuine ", "organic ", "enamelled ")
CARE_INSTRUCTIONS = ("machine wash cold", "hand wash only", "hand wash cold", "tumble dry low", "dishwasher safe",
                     "wipe clean")


def material_value(phrase: str) -> str:
    """The canonical material of a listing's phrase: "FSC&#8211;certified beech wood" → "beech wood"."""
    value = fact_form(phrase).split(" with ")[0]  # "canvas with a split suede sole" is canvas
    while stripped := next((value[len(q):] for q in MATERIAL_QUALIFIERS if value.startswith(q)), None):
        value = stripped
    return value


def care_value(phrase: str) -> str:
    """The canonical care instruction in a listing's phrase: "Wipe clean with a damp cloth" → "wipe clean"."""
    return next(care for care in CARE_INSTRUCTIONS if care in fact_form(phrase))


def materials_vocabulary() -> tuple[str, ...]:
    """Every canonical material the generator writes (helpers.facts reads them back)."""
    phrases = [material for _, materials in GARMENTS.values() for material in materials]
    phrases += [material for materials in SHOES.values() for material in materials]
    phrases += [material for _, _, materials, _ in TOYS.values() for material in materials]
    phrases += [material for materials, *_ in HOME_ITEMS.values() for material in materials]
    phrases += [fact.value for *_, facts in DEMO_RECORDS for fact in facts if fact.attribute == "material"]
    return tuple(sorted({material_value(phrase) for phrase in phrases}))


@dataclass(frozen=True)
class Product:
    """One generated product: its title and content, and its record's typed facts (empty without a description)."""

    title: str
    content: str
    facts: tuple[Fact, ...] = ()

    @property
    def title_facts(self) -> tuple[Fact, ...]:
        return tuple(fact for fact in self.facts if fact.in_title)

    @property
    def catalogue_facts(self) -> tuple[Fact, ...]:
        return tuple(fact for fact in self.facts if not fact.in_title)


# --- One maker per category: a coherent record and its facts ----------------------------------------------------


def _phrase(rng: random.Random) -> str:
    """A title phrase from four or five independent draws: few accidental duplicates even at full size.

    First names only: a whole name in a title would be a fact of its own."""
    adjective, noun, other_noun = rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(NOUNS)
    return rng.choice((
        f"The {adjective} {noun} of the {rng.choice(ADJECTIVES)} {other_noun}",
        f"{rng.choice(FIRST_NAMES)}'s {adjective} {noun} and the {other_noun}",
        f"{rng.choice(FIRST_NAMES)} and the {adjective} {noun}",
        f"A {adjective} {noun} for {rng.choice(FIRST_NAMES)}: {other_noun} Stories",
    ))


def _age_range(rng: random.Random, youngest: int, oldest_youngest: int, span: tuple[int, int]) -> tuple[int, int]:
    low = rng.randint(youngest, oldest_youngest)
    return low, low + rng.randint(*span)


def _book(rng: random.Random) -> Product:
    kind, formats, ages = rng.choice(BOOK_SHAPES)
    book_format = rng.choice(tuple(formats))
    pages, year, number = rng.randint(*formats[book_format]), rng.randint(1950, 2013), rng.randint(1, 12)
    author = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    title, title_facts, series = _phrase(rng), {}, ""
    suffix = rng.choice(("", "", "book", "volume", "edition", "format"))
    if suffix == "book":
        title, series = title + f" (Book {number})", f" Book {number} of the series."
        title_facts["series"] = f"book {number}"
    elif suffix == "volume":
        title, series = title + f", Volume {number}", f" Volume {number} of the collection."
        title_facts["series"] = f"volume {number}"
    elif suffix == "edition":
        title += f" ({year} Edition)"
        title_facts["year"] = str(year)
    elif suffix == "format":
        title += f" ({book_format})"
        title_facts["format"] = book_format
    adjective = rng.choice(ADJECTIVES).lower()
    content = (f"{'An' if adjective[0] in 'aeiou' else 'A'} {adjective} {kind} by {author} about a "
               f"{rng.choice(NOUNS).lower()} and the people who love it. {book_format}, {pages} pages, first "
               f"published in {year}.{series}")
    description_facts = {"person": author, "pages": str(pages)}
    description_facts.update({key: value for key, value in (("year", str(year)), ("format", book_format))
                              if key not in title_facts})
    if ages:
        youngest, oldest = _age_range(rng, ages[0], ages[1] - 2, (2, 3))
        content += f" Ages {youngest}&#8211;{oldest}."
        description_facts["age"] = f"{youngest}-{oldest}"
    return Product(title, content, facts_of(title_facts, description_facts))


def _clothing(rng: random.Random) -> Product:
    wearer, color, care = rng.choice(tuple(APPAREL_SIZES)), rng.choice(COLORS), rng.choice(CLOTHING_CARE)
    if rng.random() < 0.3:
        garment = rng.choice(tuple(SHOES))
        size, ages = rng.choice(tuple(SHOE_SIZES[wearer].items()))
        material, length, care = rng.choice(SHOES[garment]), None, "wipe clean"
    else:
        garment = rng.choice(tuple(GARMENTS))
        lengths, materials = GARMENTS[garment]
        size, ages = rng.choice(tuple(APPAREL_SIZES[wearer].items()))
        material = rng.choice(materials)
        length = None
        if lengths:
            share = CHILD_LENGTH_SHARE.get(wearer, 1.0)
            length = max(3, round(rng.randint(*lengths) * share))
    title = f"{wearer} {garment} {color}"
    title_facts, description_facts = {"color": color}, {"material": material_value(material)}
    if rng.random() < 0.5:
        title += f" Size {size}"
        title_facts["size"] = size
    else:
        description_facts["size"] = size
    content = f"{color} {garment.lower()} for {WEARER_NOUNS[wearer]}, size {size}. Made of {material}"
    if length:
        content += f", {length} inches long"
        description_facts["length"] = str(length)
    if ages:
        content += f"; fits ages {ages[0]}-{ages[1]}"
        description_facts["age"] = f"{ages[0]}-{ages[1]}"
    content += f". {care.capitalize()}. Perfect for class, recitals &amp; competitions."
    description_facts["care"] = care
    return Product(title, content, facts_of(title_facts, description_facts))


def _toy(rng: random.Random) -> Product:
    brand, toy = rng.choice(TOY_BRANDS), rng.choice(tuple(TOYS))
    pieces_choices, ages, materials, batteries_choices = TOYS[toy]
    youngest, material, batteries = rng.randint(*ages), rng.choice(materials), rng.choice(batteries_choices)
    if pieces_choices and rng.random() < 0.9:
        pieces = rng.choice(pieces_choices)
        if toy == "Puzzle":  # many small pieces are for older children
            youngest = max(youngest, {500: 8, 1000: 12}.get(pieces, youngest))
    else:
        pieces = None
    width, height = rng.randint(8, 24), rng.randint(6, 18)
    title_facts = {"brand": brand, "age": f"{youngest}+"}
    title = f"{brand} {toy}"
    content = f"{brand} {toy.lower()}: "
    if pieces:
        title += f", {pieces} Pieces"
        content += f"{pieces} pieces "
        title_facts["pieces"] = str(pieces)
    title += f", Ages {youngest}+"
    content += (f"made of {material}, for ages {youngest} and up. Comes in a {width} x {height} inch storage box")
    description_facts = {"material": material_value(material), "dimensions": f"{width} x {height}"}
    if batteries:
        content += f" and needs {batteries} AA batteries (not included)."
        description_facts["batteries"] = f"{batteries} aa"
    else:
        content += "; no batteries needed."
        description_facts["batteries"] = "none"
    return Product(title, content, facts_of(title_facts, description_facts))


def _music(rng: random.Random) -> Product:
    year, artist, genre, music_format = (rng.randint(1960, 2013), rng.choice(ARTISTS), rng.choice(GENRES),
                                         rng.choice(MUSIC_FORMATS))
    tracks = rng.randint(8, 18)
    minutes, booklet = tracks * rng.randint(3, 5) + rng.randint(0, 4), rng.choice((8, 12, 16, 24, 32))
    title = f"{_phrase(rng)} [{music_format}, {year}] {artist}"
    content = (f"{music_format}: {artist}&#8217;s {genre} album from {year}, {tracks} tracks, {minutes} minutes, "
               f"remastered &amp; with a {booklet}-page booklet.")
    return Product(title, content, facts_of(
        {"person": artist, "year": str(year), "format": music_format},
        {"genre": genre, "tracks": str(tracks), "minutes": str(minutes), "booklet": str(booklet)}))


def _movie(rng: random.Random) -> Product:
    year, director, rating, movie_format = (rng.randint(1960, 2013), rng.choice(DIRECTORS), rng.choice(MOVIE_RATINGS),
                                            rng.choice(MOVIE_FORMATS))
    minutes, scenes = rng.randint(78, 185), rng.randint(2, 9)
    title = f"{_phrase(rng)} ({movie_format}, {year})"
    content = (f"{movie_format} of the {year} film directed by {director}; rated {rating}, {minutes} minutes, "
               f"widescreen, English and Spanish subtitles. Special features: {scenes} deleted scenes and a "
               "&quot;making of&quot;.")
    return Product(title, content, facts_of(
        {"format": movie_format, "year": str(year)},
        {"person": director, "rating": rating, "minutes": str(minutes), "deleted scenes": str(scenes)}))


def _music_or_movie(rng: random.Random) -> Product:
    return _music(rng) if rng.random() < 0.5 else _movie(rng)


def _home(rng: random.Random) -> Product:
    brand, item, color = rng.choice(HOME_BRANDS), rng.choice(tuple(HOME_ITEMS)), rng.choice(COLORS)
    materials, (widths, depths), sets, cares = HOME_ITEMS[item]
    material, count, care = rng.choice(materials), rng.choice(sets), rng.choice(cares)
    width, depth = rng.randint(*widths), rng.randint(*depths)
    warranty, days = rng.randint(1, 10), rng.randint(1, 5)
    title = f"{brand} {fact_form(material).title()} {item} {width} x {depth} Inch"
    title_facts = {"brand": brand, "material": material_value(material), "dimensions": f"{width} x {depth}"}
    content = f"{brand} {item.lower()} in {material}, {width} x {depth} inches"
    if count > 1:
        title += f", Set of {count}"
        content += f", set of {count}"
        title_facts["set size"] = str(count)
    content += (f". Colour: {color}. Comes with a {warranty}&#8209;year warranty; {care.lower()}. Ships in {days} "
                "business days.")
    return Product(title, content, facts_of(
        title_facts, {"color": color, "warranty": str(warranty), "care": care_value(care), "shipping": str(days)}))


CATEGORY_MAKERS = (_book, _book, _clothing, _toy, _music_or_movie, _home)  # books dominate, as on Amazon


# --- The file: demos first, then generated records with the real file's untidiness ----------------------------------


def _placeholders(rng: random.Random) -> dict[str, object]:
    return dict(first=rng.choice(FIRST_NAMES), last=rng.choice(LAST_NAMES), year=rng.randint(1950, 2013),
                size=rng.choice(("XS", "S", "M", "L", "XL")), material=rng.choice(("100% cotton", "microfiber")),
                pages=rng.randint(24, 900), kind=rng.choice(BOOK_SHAPES)[0], color=rng.choice(COLORS),
                count=rng.randint(2, 40), adjective=rng.choice(ADJECTIVES), noun=rng.choice(NOUNS),
                adjective_lower=rng.choice(ADJECTIVES).lower())


def _untidy(rng: random.Random, content: str) -> str:
    """What real scraped contents look like: doubled spaces, line breaks, hex entities, stray whitespace."""
    roll = rng.random()
    if roll < 0.08:
        return content.replace(". ", ".  ", 1)
    if roll < 0.12:
        return content.replace(". ", ".\n", 1)
    if roll < 0.16:
        return content.replace("&#8217;", "&#x2019;")
    if roll < 0.19:
        return f"  {content}\t"
    return content


def _targets(rng: random.Random) -> tuple[list[int], list[float]]:
    first = rng.randrange(0, 2_000_000)
    indices = sorted({first + rng.randrange(0, 500) for _ in range(rng.randint(1, 12))})
    return indices, [1.0] * len(indices)


def _uid(index: int) -> str:
    # 7919 is coprime with 10**9, so uids are unique for every index below a billion.
    return f"B{(index * 7919 + 1_000_003) % 10**9:09d}"


def _described(rng: random.Random, product: Product) -> Product:
    """The product with the untidiness of real contents: marketing blurbs, rarely a very long text, odd spacing."""
    content = product.content + "".join(" " + blurb for blurb in rng.sample(BLURBS, rng.randint(0, MAX_BLURBS)))
    if rng.random() < LONG_SHARE:
        paragraphs = (LONG_PARAGRAPH.format(**_placeholders(rng)) for _ in range(rng.randint(10, 40)))
        content += " " + " ".join(paragraphs)
    return replace(product, content=_untidy(rng, content))


def generate_products(n_records: int, seed: int = DEFAULT_SEED) -> Iterator[tuple[str, Product, list, list]]:
    """(uid, product, target_ind, target_rel) for ``n_records`` records, the same for the same seed; demos first.

    A product whose content is empty or short carries no facts (there is no description to state them).
    """
    rng = random.Random(seed)
    recent: list[Product] = []
    for index in range(n_records):
        if index < len(DEMO_RECORDS):
            uid, title, content, facts = DEMO_RECORDS[index]
            product = Product(title, content, facts)
        else:
            uid = _uid(index)
            product = rng.choice(CATEGORY_MAKERS)(rng)
            roll = rng.random()
            if roll < EMPTY_SHARE:
                product = Product(product.title, "")
            elif roll < EMPTY_SHARE + SHORT_SHARE:
                product = Product(product.title, rng.choice(SHORT_CONTENTS).format(**_placeholders(rng)))
            elif roll < EMPTY_SHARE + SHORT_SHARE + DUPLICATE_SHARE and recent:
                # A listing scraped twice: a recent product again, under another uid.
                product = rng.choice(recent)
            else:
                product = _described(rng, product)
                recent.append(product)
                if len(recent) > RECENT_TITLES_KEPT:
                    recent.pop(0)
        target_ind, target_rel = _targets(rng)
        yield uid, product, target_ind, target_rel


def generate_records(n_records: int, seed: int = DEFAULT_SEED) -> Iterator[dict]:
    """Yield ``n_records`` trn.json records, the same ones for the same seed; demo products come first."""
    for uid, product, target_ind, target_rel in generate_products(n_records, seed):
        yield {"uid": uid, "title": product.title, "content": product.content, "target_ind": target_ind,
               "target_rel": target_rel}


def facts_path(sample_path: Path | str) -> Path:
    """Where the facts of a sample live: beside it, trn.json → trn_facts.json."""
    sample_path = Path(sample_path)
    return sample_path.with_name(f"{sample_path.name.split('.')[0]}_facts.json")


def write_sample(path: Path | str, n_records: int, seed: int = DEFAULT_SEED, progress: bool = False) -> Path:
    """Stream ``n_records`` generated records to ``path`` as JSON lines, and their facts beside it (facts_path).

    Both are written to temporary files first. The facts file has one line per record with a description:
    {"uid", "facts": [[attribute, value, in_title], ...]}.
    """
    from helpers.quiet import progress as progress_bar

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder = msgspec.json.Encoder()
    products = generate_products(n_records, seed)
    if progress:
        products = progress_bar(products, total=n_records, unit="records", desc=f"writing {path.name}",
                                mininterval=2.0)
    with (replaced_on_success(path) as partial, replaced_on_success(facts_path(path)) as facts_partial,
          partial.open("wb", buffering=1 << 20) as output, facts_partial.open("wb") as facts_output):
        for uid, product, target_ind, target_rel in products:
            output.write(encoder.encode({"uid": uid, "title": product.title, "content": product.content,
                                         "target_ind": target_ind, "target_rel": target_rel}))
            output.write(b"\n")
            if product.facts:
                facts_output.write(encoder.encode({"uid": uid, "facts": [[fact.attribute, fact.value, fact.in_title]
                                                                          for fact in product.facts]}))
                facts_output.write(b"\n")
    return path


def load_facts(sample_path: Path | str | None = None) -> dict[str, tuple[Fact, ...]]:
    """uid → the record's facts, for a sample; empty for a file without facts (the real trn.json)."""
    facts_file = facts_path(sample_path or paths().raw_sample)
    if not facts_file.is_file():
        return {}
    facts = {}
    with facts_file.open("rb") as source:
        for line_number, line in enumerate(source, start=1):
            try:
                record = msgspec.json.decode(line)
                facts[record["uid"]] = tuple(Fact(attribute, value, in_title)
                                             for attribute, value, in_title in record["facts"])
            except (msgspec.DecodeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{facts_file}, line {line_number}: not a facts record ({error}); "
                                 "regenerate it with `python -m helpers.synthetic`.") from None
    return facts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write an AmazonTitles-style trn.json sample (JSON lines) and "
                                                 "its facts (trn_facts.json).")
    parser.add_argument("--records", type=int, default=SAMPLE_RECORDS,
                        help=f"number of records (the real file has {FULL_SIZE_RECORDS:,})")
    parser.add_argument("--output", type=Path, default=paths().raw_sample, help="where to write the JSON lines")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    arguments = parser.parse_args(argv)
    write_sample(arguments.output, arguments.records, arguments.seed, progress=True)
    print(f"wrote {arguments.records:,} records to {arguments.output} and their facts to "
          f"{facts_path(arguments.output)}")


if __name__ == "__main__":
    main()
