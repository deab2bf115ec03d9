"""CaseOps: encode/decode are exact inverses on every string (seeded random property test over
mixed scripts, combining marks, operator characters in the input, odd case mappings), the operators
mark title/all-caps/mixed words, and the original-byte counts of a transformed text sum to the
original's UTF-8 length."""

from __future__ import annotations

import random

import pytest

from pgolf.data import caseops
from pgolf.data.caseops import ALLCAPS, CAPNEXT, ESC, OPERATORS, TITLE, CaseOpsError, original_char_bytes

# Pieces the generator draws from: words in several cases and scripts, digits, punctuation,
# combining marks, the operator characters themselves, and letters whose case mapping is odd.
ODD_CASE = ["ß", "ẞ", "İ", "ı", "K", "ǅ", "ǈ", "ŉ", "ﬁ", "ΐ", "ς", "Σ", "ͅ", "ᾼ", "Ω", "Å"]
ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "éèêëàâäôöûüçñ",
    "ÉÈÊËÀÂÄÔÖÛÜÇÑ",
    "αβγδεζηθικλμνξοπρστυφχψω",
    "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ",
    "абвгдежзийклмнопрстуфхцчшщ",
    "АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩ",
    "漢字かなカナ한국어",
    "ا ب ت ث",
]
OTHER = list("0123456789 .,;:!?'\"-_()[]{}\n\t/\\@#$%^&*+=~`|<>") + ["\u0301", "\u0308", "\u200d", "🙂", "\x00"]


def random_word(rng: random.Random) -> str:
    alphabet = rng.choice(ALPHABETS)
    word = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9)))
    style = rng.random()
    if style < 0.25:
        return word.lower()
    if style < 0.5:
        return word[:1].upper() + word[1:].lower()
    if style < 0.7:
        return word.upper()
    return "".join(c.upper() if rng.random() < 0.4 else c for c in word)


def random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 25)):
        r = rng.random()
        if r < 0.55:
            parts.append(random_word(rng))
        elif r < 0.7:
            parts.append(rng.choice(ODD_CASE))
        elif r < 0.8:
            parts.append(rng.choice(OPERATORS))
        else:
            parts.append(rng.choice(OTHER))
    return "".join(parts)


def test_roundtrip_is_exact_on_random_strings():
    rng = random.Random(20260501)
    for _ in range(5000):
        text = random_text(rng)
        enc = caseops.encode(text)
        assert caseops.decode(enc) == text, repr(text)
        assert sum(original_char_bytes(enc)) == len(text.encode("utf-8"))


def test_roundtrip_on_arbitrary_code_points():
    rng = random.Random(7)
    for _ in range(2000):
        text = "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randint(0, 30)))
        assert caseops.decode(caseops.encode(text)) == text, repr(text)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The cat", f"{TITLE}the cat"),
        ("NASA rocks", f"{ALLCAPS}nasa rocks"),
        ("McDonald", f"{TITLE}mc{CAPNEXT}donald"),
        ("iPhone", f"i{CAPNEXT}phone"),
        ("A b", f"{TITLE}a b"),
        ("Élan ΣΑΣ", f"{TITLE}élan {ALLCAPS}σασ"),  # lowered letter by letter: no final sigma
        ("straße", "straße"),  # 'ß' is lower case already
        ("İstanbul", "İstanbul"),  # 'İ'.lower() is two characters: left as it is
        (f"x{TITLE}y", f"x{ESC}{TITLE}y"),
        ("", ""),
    ],
)
def test_encode_examples(text, expected):
    assert caseops.encode(text) == expected
    assert caseops.decode(expected) == text


@pytest.mark.parametrize("bad", [TITLE, f"{TITLE} x", f"{ALLCAPS}{TITLE}a", f"a{ESC}", f"{CAPNEXT}1"])
def test_malformed_text_is_refused(bad):
    with pytest.raises(CaseOpsError):
        caseops.decode(bad)


def test_original_bytes_of_operators_and_capitals():
    enc = caseops.encode("Éa")  # TITLE, 'é' (2 bytes as 'É'), 'a'
    assert original_char_bytes(enc) == [0, 2, 1]
    assert original_char_bytes(caseops.encode(TITLE)) == [0, 3]  # ESC costs 0, the literal its 3 bytes
