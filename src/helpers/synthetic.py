"""A deterministic AmazonTitles-style sample in the exact ``trn.json`` format.

The real AmazonTitles-1.3MM ``trn.json`` (2,248,619 JSON lines of uid, title, content, target_ind, target_rel)
cannot be downloaded offline, so the course ships a generated sample with the same shape and the same problems:
HTML entities, empty and short contents (the reference dropped about 46%), duplicate titles, unicode and a few
very long descriptions. Every description carries product-specific facts (ages, sizes, materials, authors,
counts, years): a model that only learned the style gets them wrong, retrieval gets them right.

The four demo products of the reference solution come first, with contents modelled on its write-up, followed
by near neighbours (other tutu colours, other Mog books, other Bible books, other Gibran titles) so that
retrieval has something to confuse.

    python -m helpers.synthetic --records 5000 --output data/raw/trn.json
"""
from __future__ import annotations

import argparse
import html
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec

from helpers.config import paths

FULL_SIZE_RECORDS = 2_248_619  # records in the real trn.json, as the reference solution counted them
SAMPLE_RECORDS = 5_000  # the committed sample: ~2,600 records survive preprocessing, ~3 MB on disk
DEFAULT_SEED = 1_360_000

# Shares of generated records, tuned so that about 46% is dropped as in the real file.
EMPTY_SHARE = 0.29
SHORT_SHARE = 0.17
DUPLICATE_SHARE = 0.03
LONG_SHARE = 0.01
RECENT_TITLES_KEPT = 512  # duplicates repeat a recent title: bounded memory even for the full-size file

# (uid, title, content) of the reference's demo products and their near neighbours, in file order.
DEMO_RECORDS: tuple[tuple[str, str, str], ...] = (
    ("0000031895", "Girls Ballet Tutu Neon Blue",
     "Dance tutu for girls ages 2-8 years. Perfect for dance practice, recitals and performances, costumes or "
     "just for fun!"),
    ("0001360000", "Mog's Kittens",
     "Judith Kerr&#8217;s best&#8211;selling adventures of that endearing (and exasperating) cat Mog have "
     "entertained children for more than 30 years. Now, even infants and toddlers can enjoy meeting this "
     "loveable feline. These sturdy little board books&#8212;with their bright, simple pictures, easy text, and "
     "hand&#8211;friendly formats&#8212;are just the thing to delight the very young. Ages 6 months&#8211;2 years."),
    ("0394404289", "The Prophet",
     "In a distant, timeless place, a mysterious prophet walks the sands. At the moment of his departure, he "
     "wishes to offer the people gifts but possesses nothing. The people gather round, each asks a question of "
     "the heart, and the man&#8217;s wisdom is his gift. It is Gibran&#8217;s gift to us as well, for "
     "Gibran&#8217;s prophet is rivaled in his wisdom only by the founders of the world&#8217;s great religions. "
     "On the most basic topics&#8212;marriage, children, friendship, work, pleasure&#8212;his words have a power "
     "and lucidity that in another era would surely have provoked the description &quot;divinely inspired.&quot; "
     "Free of dogma, free of power structures and metaphysics, consider these 26 poetic, moving aphorisms a "
     "20th&#8211;century supplement to all sacred traditions&#8212;as millions of other readers already have. "
     "--Brian Bruya. This text refers to the Hardcover edition."),
    ("0933697214", "The Book of Revelation",
     "Clarence Larkin&#8217;s verse&#8211;by&#8211;verse study of Revelation, the last book of the New "
     "Testament, written for Bible students and pastors. Illustrated with 35 of Larkin&#8217;s own prophetic charts, it follows the "
     "seven churches, the seven seals, the seven trumpets and the seven vials to the New Jerusalem. "
     "First published in 1919; 208 pages. This text refers to the Paperback edition."),
    ("B0007TUTU2", "Girls Ballet Tutu Neon Pink",
     "Neon pink, high quality 3 layer ballet tutu 12 inches in length. Soft nylon tulle on a 1&quot; elastic waistband that "
     "stretches from 18 to 26 inches. Fits girls ages 4&#8211;10."),
    ("B0007TUTU3", "Girls Ballet Tutu Neon Green",
     "Bright neon green tutu with 4 layers of tulle, 11 inches long, satin ribbon bow at the waist. For toddlers "
     "ages 1&#8211;3 years; hand wash cold."),
    ("B0007TUTU4", "Girls Ballet Tutu Neon Purple",
     "Neon purple 2 layer tutu skirt, 10 inches long, with a hidden drawstring waist. Sized for girls ages "
     "3&#8211;6; 100% polyester, machine washable."),
    ("B0007TUTU5", "Girls Ballet Tutu Zebra Print",
     "Zebra print ballet tutu with 5 layers of tulle and a matching headband, 13 inches long. Recommended for "
     "girls ages 6&#8211;12 &amp; great for dance recitals."),
    ("0439874874", "Delphie and the Birthday Show (Magic Ballerina, Book 6)",
     "Delphie&#8217;s friend Brianna is having a birthday party, and Delphie is in charge of the show. Darcey "
     "Bussell&#8217;s Magic Ballerina series, book 6 of 6: 128 pages, ages 6&#8211;9, first published in 2008."),
    ("0007171293", "Mog and the V.E.T. (Mog the Cat Books)",
     "Praise for Mog the Forgetful Cat: &#x2018;Grandparents are likely to get as much fun out of seeing it again "
     "as the new generation of fans just learning to read&#x2019; Choice Magazine. &#x2018;A lovely book for all "
     "Mog&#8211;fanciers&#x2019; The Observer. Mog swallows a bee and has to visit the vet: 32 pages, ages "
     "3&#8211;7, first published in 1995."),
    ("0007171277", "Mog on Fox Night",
     "Praise for Goodbye Mog: &#x2018;Kerr&#x2019;s warmth, humour and honesty make this an engaging "
     "introduction to a difficult topic&#x2019; Financial Times. On a snowy night Mog meets three foxes in the "
     "garden. Picture book, 32 pages, ages 3&#8211;6, first published in 1993."),
    ("0007149654", "Mog the Forgetful Cat",
     "The very first Mog story, published in 1970: Mog forgets she has a cat flap, forgets she has eaten her "
     "supper and finally catches a burglar. Judith Kerr&#8217;s classic picture book, 40 pages, ages 2&#8211;5."),
    ("0007149700", "Goodbye Mog",
     "Judith Kerr&#8217;s gentle story about the death of Mog, the much&#8211;loved family cat, and the new kitten who "
     "arrives at the Thomas house. 32 pages, ages 4&#8211;8, first published in 2002; over 200,000 copies sold."),
    ("0007215924", "Mog's Christmas",
     "It is Christmas Eve and Mog hates the noise and the tree that walks into the house, so she climbs onto the "
     "snowy roof. Board book edition, 24 pages, ages 1&#8211;4, first published in 1976."),
    ("0007215932", "Mog's Bad Thing",
     "Mog has been doing a bad thing, and the Thomas family cannot work out who is to blame. Hardcover, 32 pages, "
     "ages 3&#8211;6, first published in 2000 &amp; still a favourite at bedtime."),
    ("0394436121", "The Garden of the Prophet",
     "Kahlil Gibran&#8217;s sequel to The Prophet, completed after his death in 1931 by Barbara Young: Almustafa "
     "returns to his island and speaks of pity, space and the nature of God. 72 pages, 1933 edition."),
    ("0394430727", "Jesus, the Son of Man",
     "Kahlil Gibran&#8217;s portrait of Jesus told by 77 of his contemporaries, friends and enemies alike. "
     "First published in 1928; 216 pages with 12 of Gibran&#8217;s own drawings."),
    ("0394432002", "The Madman: His Parables and Poems",
     "Gibran&#8217;s first book in English, published in 1918: 34 short parables and poems about the mask we "
     "show the world. 71 pages, illustrated with three drawings by the author."),
    ("0933697125", "The Book of Daniel",
     "Clarence Larkin&#8217;s study of the prophecies of Daniel: the four beasts, the seventy weeks and the "
     "image of Nebuchadnezzar. 278 pages with 16 charts, first published in 1929."),
    ("1585161004", "The Book of Genesis",
     "A chapter&#8211;by&#8211;chapter commentary on Genesis, the first book of the Bible, for small groups: 50 chapters "
     "in 12 weekly sessions, with maps of Abraham&#8217;s journeys. Paperback, 164 pages, 2004."),
    ("1585161012", "The Book of Psalms",
     "All 150 psalms in the King James Version, set in large 14&#8211;point type with a ribbon marker and a "
     "topical index. Leather&#8211;bound, 320 pages, 6 x 9 inches."),
    ("1585161020", "The Book of Job",
     "Stephen Mitchell&#8217;s translation of the Book of Job, with an introduction on suffering and justice. "
     "Paperback, 129 pages, first published in 1987 &amp; revised in 1992."),
    ("0933697036", "Dispensational Truth or God's Plan and Purpose in the Ages",
     "American Baptist pastor, Bible teacher and writer Clarence Larkin was born October 28, 1850, in Chester, "
     "Delaware County, Pennsylvania. He was converted to Christ at the age of 19, worked in a bank, graduated as "
     "a mechanical engineer and was ordained as a Baptist minister in 1884. He spent three years of his life "
     "designing and drawing the 90 charts of Dispensational Truth, first published in 1918. He went to be with the Lord on "
     "January 24, 1924. This text refers to the Paperback edition."),
)


# (title facts, catalogue facts) of the demo records, by uid, in fact_form: what a description of each must state.
DEMO_FACTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "0000031895": (("tutu", "girls"), ("ages 2-8",)),
    "0001360000": (("mog",), ("judith kerr", "board books", "ages 6 months-2 years", "30 years")),
    "0394404289": (("prophet",), ("gibran", "26", "hardcover")),
    "0933697214": (("revelation",), ("clarence larkin", "35", "1919", "208 pages", "paperback")),
    "B0007TUTU2": (("neon pink",), ("3 layer", "12 inches", "nylon tulle", "ages 4-10")),
    "B0007TUTU3": (("neon green",), ("4 layers", "11 inches", "ages 1-3", "hand wash cold")),
    "B0007TUTU4": (("neon purple",), ("2 layer", "10 inches", "drawstring", "ages 3-6", "polyester")),
    "B0007TUTU5": (("zebra print",), ("5 layers", "headband", "13 inches", "ages 6-12")),
    "0439874874": (("delphie", "magic ballerina", "book 6"), ("darcey bussell", "128 pages", "ages 6-9", "2008")),
    "0007171293": (("mog",), ("32 pages", "ages 3-7", "1995")),
    "0007171277": (("mog",), ("three foxes", "32 pages", "ages 3-6", "1993")),
    "0007149654": (("mog",), ("1970", "cat flap", "burglar", "judith kerr", "40 pages", "ages 2-5")),
    "0007149700": (("mog",), ("judith kerr", "32 pages", "ages 4-8", "2002", "200,000")),
    "0007215924": (("mog", "christmas"), ("board book", "24 pages", "ages 1-4", "1976")),
    "0007215932": (("mog", "bad thing"), ("hardcover", "32 pages", "ages 3-6", "2000")),
    "0394436121": (("prophet",), ("kahlil gibran", "1931", "barbara young", "almustafa", "72 pages", "1933")),
    "0394430727": (("jesus",), ("kahlil gibran", "77", "1928", "216 pages")),
    "0394432002": (("parables and poems",), ("1918", "34", "71 pages", "three drawings")),
    "0933697125": (("daniel",), ("clarence larkin", "278 pages", "16 charts", "1929")),
    "1585161004": (("genesis",), ("50 chapters", "12 weekly sessions", "abraham", "paperback", "164 pages", "2004")),
    "1585161012": (("psalms",), ("150", "king james", "14-point", "leather-bound", "320 pages", "6 x 9")),
    "1585161020": (("job",), ("stephen mitchell", "paperback", "129 pages", "1987", "1992")),
    "0933697036": (("dispensational truth",),
                   ("clarence larkin", "1850", "1884", "90 charts", "1918", "1924", "paperback")),
}

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
BOOK_KINDS = ("novel", "memoir", "picture book", "history", "cookbook", "field guide", "collection of stories",
              "biography", "thriller", "study guide")
BOOK_FORMATS = ("Paperback", "Hardcover", "Board book", "Mass Market Paperback", "Library Binding")

COLORS = ("Neon Blue", "Neon Pink", "Black", "White", "Navy", "Red", "Lavender", "Royal Blue", "Hot Pink",
          "Turquoise", "Burgundy", "Mint", "Coral", "Charcoal", "Ivory", "Leopard Print", "Rainbow", "Gold")
WEARERS = ("Girls", "Womens", "Mens", "Boys", "Toddler", "Unisex Adult", "Kids")
GARMENTS = ("Ballet Leotard", "Jazz Pants", "Tap Shoes", "Ballet Slippers", "Dance Skirt", "Yoga Leggings",
            "Camisole Leotard", "Wrap Sweater", "Warm-Up Shorts", "Lyrical Dress", "Character Shoes",
            "Convertible Tights", "Hip Hop Sneakers", "Chiffon Skirt", "Unitard")
MATERIALS = ("100% cotton", "nylon and spandex", "soft nylon tulle", "cotton&#8211;spandex blend",
             "genuine leather", "canvas with a split suede sole", "microfiber", "polyester and elastane",
             "stretch velvet", "organic bamboo jersey")
SIZES = ("XS", "S", "M", "L", "XL", "Child 4-6", "Child 8-10", "Adult Petite", "Toddler 2T")
CLOTHING_CARE = ("machine wash cold", "hand wash only", "tumble dry low")

TOY_BRANDS = ("Lumina", "Oakridge", "TinkerTown", "Brightbox", "Kidoodle", "Maple & Moss", "Zippo Zoo",
              "Crème de la Play", "Pip & Pebble", "Wunderbau")
TOYS = ("Wooden Building Blocks", "Magnetic Tiles", "Puzzle", "Train Set", "Stacking Rings", "Dollhouse",
        "Marble Run", "Plush Bear", "Remote Control Car", "Science Kit", "Tea Party Set", "Xylophone",
        "Board Game", "Kite", "Craft Kit", "Dinosaur Figures")
TOY_MATERIALS = ("FSC&#8211;certified beech wood", "BPA&#8211;free plastic", "recycled cardboard",
                 "soft plush polyester", "die&#8211;cast metal", "non&#8211;toxic water&#8211;based paint")

ARTISTS = ("The Velvet Orchard", "Marta Solís", "Northern Lights Quartet", "DJ Kōji", "Björk Halvorsen",
           "The Copper Foxes", "Ella Brightwater", "Los Hermanos Ruiz", "Café Tacvba Tribute Band", "Sam O'Neill")
GENRES = ("jazz", "folk", "classical", "indie rock", "bossa nova", "blues", "soul", "bluegrass", "ambient", "pop")
MOVIE_RATINGS = ("G", "PG", "PG-13", "R", "NR")
DIRECTORS = ("Agnès Varga", "Hiro Matsuda", "Paul Keane", "Lucía Ortega", "Frank Delaney", "Ingmar Solberg")

HOME_BRANDS = ("Hearthstone", "Nordkök", "Casa Bella", "Ironleaf", "Sunbeam Lane", "Pure & Simple", "Okavango",
               "Belle Époque")
# Each item with the materials it is made of: a cotton kettle would teach the model nonsense.
HOME_ITEMS = {
    "Tea Kettle": ("stainless steel", "enamelled cast iron", "borosilicate glass"),
    "Dutch Oven": ("enamelled cast iron", "stainless steel", "stoneware"),
    "Throw Blanket": ("Egyptian cotton", "merino wool", "bamboo"),
    "Table Lamp": ("brushed brass", "stoneware", "acacia wood"),
    "Cutting Board": ("acacia wood", "bamboo", "walnut"),
    "Storage Baskets": ("hand&#8211;woven seagrass", "bamboo", "cotton rope"),
    "Bath Towels": ("Egyptian cotton", "bamboo", "Turkish cotton"),
    "Wall Clock": ("brushed brass", "acacia wood", "stainless steel"),
    "French Press": ("borosilicate glass", "stainless steel"),
    "Spice Rack": ("bamboo", "acacia wood", "stainless steel"),
    "Knife Block": ("acacia wood", "bamboo", "walnut"),
    "Bed Sheet Set": ("Egyptian cotton", "bamboo", "linen"),
    "Candle Holders": ("brushed brass", "borosilicate glass", "stoneware"),
    "Picture Frames": ("acacia wood", "brushed brass", "walnut"),
    "Coffee Mugs": ("stoneware", "borosilicate glass", "enamelled steel"),
}
HOME_CARE = ("Dishwasher safe", "Hand wash only", "Wipe clean with a damp cloth")

# Contents the reference dropped as too short: realistic fragments, all under 100 characters.
SHORT_CONTENTS = ("Paperback", "Brand new. Ships fast!", "See description above.", "Used - Good",
                  "Great gift &amp; fun for all ages!", "Amazon.com", "Book by {first} {last}",
                  "Size {size}. {material}.", "{pages} pages.", "Audio CD &#8211; {year}", "Import.",
                  "A {kind} by {first} {last}, {year}.", "DVD &#8211; Region 1", "Color: {color}",
                  "Package of {count}.", "&quot;{adjective} {noun}&quot; &#8212; {year}")
# Generic marketing sentences appended to descriptions: real contents are longer than their facts.
BLURBS = ("A perfect gift for birthdays, holidays &amp; every day in between.",
          "Customers love the quality&#8212;and so will you.",
          "&quot;Simply the best we have tried,&quot; says one of many happy reviewers.",
          "Designed with care and tested by families who know what works.",
          "Makes a wonderful addition to any collection.")
MAX_BLURBS = 1
LONG_PARAGRAPH = ("Reviewers called it &quot;{adjective_lower} and unforgettable&quot;, and readers in {count} "
                  "countries agreed. Chapter {n} alone runs to {pages} pages, with notes, maps and an index. "
                  "The {year} edition adds a new afterword by {first} {last}.")
_DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
                         "\u2019": "'", "\u2018": "'", "\u00a0": " "})


def fact_form(text: str) -> str:
    """How facts are stored and matched: entities decoded, lower case, one kind of dash and apostrophe, single spaces."""
    return " ".join(html.unescape(text).translate(_DASHES).lower().split())


def states(text: str, fact: str) -> bool:
    """Whether a text states a fact: the fact's words, whole, in the text (compared in fact_form)."""
    return re.search(rf"(?<!\w){re.escape(fact_form(fact))}(?!\w)", fact_form(text)) is not None


@dataclass(frozen=True)
class Product:
    """One generated product: its title and content, and the facts a description of it must state.

    Title facts are in the title and the description (a model can copy them from the prompt); catalogue facts are
    only in the description (a model can only know them from training or from retrieved context).
    """

    title: str
    content: str
    title_facts: tuple[str, ...] = ()
    catalogue_facts: tuple[str, ...] = ()


def _ages(rng: random.Random) -> tuple[int, int]:
    youngest = rng.randint(1, 9)
    return youngest, youngest + rng.randint(2, 8)


def _phrase(rng: random.Random) -> str:
    """A title phrase from four or five independent draws: few accidental duplicates even at full size."""
    adjective, noun, other_noun = rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(NOUNS)
    return rng.choice((
        f"The {adjective} {noun} of the {rng.choice(ADJECTIVES)} {other_noun}",
        f"{rng.choice(FIRST_NAMES)}'s {adjective} {noun} and the {other_noun}",
        f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)} and the {adjective} {noun}",
        f"A {adjective} {noun} for {rng.choice(FIRST_NAMES)}: {other_noun} Stories",
    ))


def _book(rng: random.Random) -> Product:
    first, last, year = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), rng.randint(1950, 2013)
    pages, book_format, number = rng.randint(24, 900), rng.choice(BOOK_FORMATS), rng.randint(1, 12)
    title, title_facts, series = _phrase(rng), [], ""
    suffix = rng.choice(("", "", "book", "volume", "edition", "format"))
    if suffix == "book":
        title, series = title + f" (Book {number})", f" Book {number} of the series."
        title_facts.append(f"book {number}")
    elif suffix == "volume":
        title, series = title + f", Volume {number}", f" Volume {number} of the collection."
        title_facts.append(f"volume {number}")
    elif suffix == "edition":
        title += f" ({year} Edition)"
        title_facts.append(str(year))
    elif suffix == "format":
        title += f" ({book_format})"
        title_facts.append(fact_form(book_format))
    content = (f"A {rng.choice(ADJECTIVES).lower()} {rng.choice(BOOK_KINDS)} by {first} {last} about a "
               f"{rng.choice(NOUNS).lower()} and the people who love it. {book_format}, {pages} pages, first "
               f"published in {year}.{series}")
    catalogue_facts = [fact_form(f"{first} {last}"), f"{pages} pages"]
    catalogue_facts += [fact for fact in (str(year), fact_form(book_format)) if fact not in title_facts]
    if rng.random() < 0.4:
        youngest, oldest = _ages(rng)
        content += f" Ages {youngest}&#8211;{oldest}."
        catalogue_facts.append(f"ages {youngest}-{oldest}")
    return Product(title, content, tuple(title_facts), tuple(catalogue_facts))


def _clothing(rng: random.Random) -> Product:
    color, size, wearer, garment = rng.choice(COLORS), rng.choice(SIZES), rng.choice(WEARERS), rng.choice(GARMENTS)
    material, care, length = rng.choice(MATERIALS), rng.choice(CLOTHING_CARE), rng.randint(8, 40)
    youngest, oldest = _ages(rng)
    title = f"{wearer} {garment} {color}"
    title_facts = [fact_form(color)]
    size_fact = fact_form(f"size {size}")
    if rng.random() < 0.5:
        title += f" Size {size}"
        title_facts.append(size_fact)
    content = (f"{color} {garment.lower()} for {wearer.lower()}, size {size}. Made of {material}, {length} inches "
               f"long; fits ages {youngest}-{oldest}. {care.capitalize()}. Perfect for class, recitals &amp; "
               "competitions.")
    catalogue_facts = [fact_form(material), f"{length} inches", f"ages {youngest}-{oldest}", care]
    if size_fact not in title_facts:
        catalogue_facts.append(size_fact)
    return Product(title, content, tuple(title_facts), tuple(catalogue_facts))


def _toy(rng: random.Random) -> Product:
    brand, toy, material = rng.choice(TOY_BRANDS), rng.choice(TOYS), rng.choice(TOY_MATERIALS)
    pieces, youngest = rng.choice((12, 24, 36, 48, 50, 60, 100, 120, 250, 500)), rng.randint(1, 8)
    width, height = rng.randint(8, 24), rng.randint(6, 18)
    title = f"{brand} {toy}, {pieces} Pieces, Ages {youngest}+"
    content = (f"{brand} {toy.lower()}: {pieces} pieces made of {material}, for ages {youngest} and up. Comes in a "
               f"{width} x {height} inch storage box")
    catalogue_facts = [fact_form(material), f"{width} x {height} inch"]
    if rng.random() < 0.3:
        batteries = rng.randint(2, 4)
        content += f" and needs {batteries} AA batteries (not included)."
        catalogue_facts.append(f"{batteries} aa batteries")
    else:
        content += "; no batteries needed."
        catalogue_facts.append("no batteries")
    return Product(title, content, (fact_form(brand), f"{pieces} pieces", f"ages {youngest}"), tuple(catalogue_facts))


def _music(rng: random.Random) -> Product:
    year, artist, genre = rng.randint(1960, 2013), rng.choice(ARTISTS), rng.choice(GENRES)
    tracks, minutes, booklet = rng.randint(8, 18), rng.randint(35, 79), rng.randint(8, 32)
    title = f"{_phrase(rng)} [Audio CD, {year}] {artist}"
    content = (f"Audio CD: {artist}&#8217;s {genre} album from {year}, {tracks} tracks, {minutes} minutes, "
               f"remastered &amp; with a {booklet}-page booklet.")
    return Product(title, content, (fact_form(artist), str(year), "audio cd"),
                   (genre, f"{tracks} tracks", f"{minutes} minutes", f"{booklet}-page booklet"))


def _movie(rng: random.Random) -> Product:
    year, director, rating = rng.randint(1960, 2013), rng.choice(DIRECTORS), rng.choice(MOVIE_RATINGS)
    minutes, scenes = rng.randint(78, 185), rng.randint(2, 9)
    title = f"{_phrase(rng)} (DVD, {year})"
    content = (f"DVD of the {year} film directed by {director}; rated {rating}, {minutes} minutes, widescreen, "
               f"English and Spanish subtitles. Special features: {scenes} deleted scenes and a &quot;making "
               "of&quot;.")
    return Product(title, content, ("dvd", str(year)),
                   (fact_form(director), fact_form(f"rated {rating}"), f"{minutes} minutes", f"{scenes} deleted scenes"))


def _music_or_movie(rng: random.Random) -> Product:
    return _music(rng) if rng.random() < 0.5 else _movie(rng)


def _home(rng: random.Random) -> Product:
    brand, item, color = rng.choice(HOME_BRANDS), rng.choice(tuple(HOME_ITEMS)), rng.choice(COLORS)
    material = rng.choice(HOME_ITEMS[item])
    count = rng.choice((1, 2, 4, 6, 8, 12))
    width, depth = rng.randint(4, 30), rng.randint(4, 30)
    warranty, care, days = rng.randint(1, 10), rng.choice(HOME_CARE), rng.randint(1, 5)
    title = f"{brand} {fact_form(material).title()} {item} {width} x {depth} Inch"
    title_facts = [fact_form(brand), fact_form(material), f"{width} x {depth}"]
    content = f"{brand} {item.lower()} in {material}, {width} x {depth} inches"
    if count > 1:
        title += f", Set of {count}"
        content += f", set of {count}"
        title_facts.append(f"set of {count}")
    content += (f". Colour: {color}. Comes with a {warranty}&#8209;year warranty; {care.lower()}. Ships in {days} "
                "business days.")
    return Product(title, content, tuple(title_facts),
                   (fact_form(color), f"{warranty}-year warranty", care.lower(), f"{days} business days"))


CATEGORY_MAKERS = (_book, _book, _clothing, _toy, _music_or_movie, _home)  # books dominate, as on Amazon


def _placeholders(rng: random.Random) -> dict[str, object]:
    return dict(first=rng.choice(FIRST_NAMES), last=rng.choice(LAST_NAMES), year=rng.randint(1950, 2013),
                size=rng.choice(SIZES), material=rng.choice(MATERIALS), pages=rng.randint(24, 900),
                kind=rng.choice(BOOK_KINDS), color=rng.choice(COLORS), count=rng.randint(2, 40),
                adjective=rng.choice(ADJECTIVES), noun=rng.choice(NOUNS), n=rng.randint(1, 30),
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


def _with_facts_sorted(product: Product) -> Product:
    """A catalogue fact that the title happens to state too (an author named in a title phrase) is a title fact."""
    in_title = tuple(fact for fact in product.catalogue_facts if states(product.title, fact))
    if not in_title:
        return product
    return replace(product, title_facts=product.title_facts + in_title,
                   catalogue_facts=tuple(fact for fact in product.catalogue_facts if fact not in in_title))


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
            uid, title, content = DEMO_RECORDS[index]
            product = Product(title, content, *DEMO_FACTS[uid])
        else:
            uid = _uid(index)
            product = _with_facts_sorted(rng.choice(CATEGORY_MAKERS)(rng))
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
    {"uid", "title_facts", "catalogue_facts"}.
    """
    from helpers.quiet import progress as progress_bar

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial, facts_partial = path.with_name(path.name + ".partial"), path.with_name(facts_path(path).name + ".partial")
    encoder = msgspec.json.Encoder()
    products = generate_products(n_records, seed)
    if progress:
        products = progress_bar(products, total=n_records, unit="records", desc=f"writing {path.name}",
                                mininterval=2.0)
    with partial.open("wb", buffering=1 << 20) as output, facts_partial.open("wb") as facts_output:
        for uid, product, target_ind, target_rel in products:
            output.write(encoder.encode({"uid": uid, "title": product.title, "content": product.content,
                                         "target_ind": target_ind, "target_rel": target_rel}))
            output.write(b"\n")
            if product.title_facts or product.catalogue_facts:
                facts_output.write(encoder.encode({"uid": uid, "title_facts": product.title_facts,
                                                   "catalogue_facts": product.catalogue_facts}))
                facts_output.write(b"\n")
    partial.replace(path)
    facts_partial.replace(facts_path(path))
    return path


def load_facts(sample_path: Path | str | None = None) -> dict[str, dict[str, tuple[str, ...]]]:
    """uid → {"title_facts", "catalogue_facts"} of a sample; empty for a file without facts (the real trn.json)."""
    facts_file = facts_path(sample_path or paths().raw_sample)
    if not facts_file.is_file():
        return {}
    facts = {}
    with facts_file.open("rb") as source:
        for line in source:
            record = msgspec.json.decode(line)
            facts[record["uid"]] = {"title_facts": tuple(record["title_facts"]),
                                    "catalogue_facts": tuple(record["catalogue_facts"])}
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
