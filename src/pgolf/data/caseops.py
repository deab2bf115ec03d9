"""CaseOps: a lossless case transform applied to text before SentencePiece.

Capital letters are replaced by their lowercase form plus an operator symbol, so the tokenizer
learns one piece for "the", "The" and "THE". Four private-use characters are the operators (the
same code points as the CaseOps tokenizers of the records, PR #1729 lineage):

    TITLE   U+E001  the next letter is upper case (a word starting with a capital)
    ALLCAPS U+E002  every letter of the letter run that follows is upper case (a word of >= 2 capitals)
    CAPNEXT U+E003  the next letter is upper case (a capital inside a mixed-case word)
    ESC     U+E004  the next character is literal (an operator character present in the input)

A "word" is a maximal run of characters with str.isalpha(). A capital is only rewritten when it
round-trips through one character: c.isupper(), c.lower() is one character and
c.lower().upper() == c. Capitals whose case mapping changes length or does not invert ('İ' ->
'i̇', the Kelvin sign, titlecase digraphs like 'ǅ') are left as they are, and lowercase letters
whose upper form is longer ('ß') never need an operator. Every letter is lowered on its own, so
Greek final-sigma rules never apply. Hence `decode(encode(s)) == s` for every string s.

Bytes: `original_char_bytes(t)` gives, for every character of a transformed text t, the UTF-8
bytes of the original character it stands for (0 for operators, the original capital's length for
a lowered letter). Their sum is len(decode(t).encode("utf-8")), which is what lets the scorer
charge each token the original bytes it covers (see pgolf.data.sidecar).
"""

from __future__ import annotations

from pgolf.core.errors import PgolfError

TITLE = "\ue001"
ALLCAPS = "\ue002"
CAPNEXT = "\ue003"
ESC = "\ue004"
OPERATORS = (TITLE, ALLCAPS, CAPNEXT, ESC)
CASEOPS_NAME = "lossless_caps_caseops_v1"  # the transform's name in build manifests


class CaseOpsError(PgolfError, ValueError):
    """A string that is not a valid CaseOps-transformed text (dangling or misplaced operator)."""


def lowerable(ch: str) -> bool:
    """True for a capital that CaseOps rewrites: one character each way, exactly invertible."""
    if not ch.isupper():
        return False
    low = ch.lower()
    return len(low) == 1 and low.upper() == ch


def _encode_word(word: str, out: list[str]) -> None:
    caps = [lowerable(c) for c in word]
    if not any(caps):
        out.append(word)
        return
    lowered = "".join(c.lower() if cap else c for c, cap in zip(word, caps))
    if len(word) >= 2 and all(caps):
        out.append(ALLCAPS)
        out.append(lowered)
        return
    if caps[0] and not any(caps[1:]):
        out.append(TITLE)
        out.append(lowered)
        return
    for i, (c, cap) in enumerate(zip(lowered, caps)):
        if cap:
            out.append(TITLE if i == 0 else CAPNEXT)
        out.append(c)


def caseops_encode(text: str) -> str:
    """Lowercase `text`, marking capitals with operators; operator characters in it are escaped."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in OPERATORS:
            out.append(ESC)
            out.append(ch)
            i += 1
        elif ch.isalpha():
            j = i + 1
            while j < n and text[j].isalpha():
                j += 1
            _encode_word(text[i:j], out)
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _walk(text: str, want_bytes: bool) -> tuple[str, list[int]]:
    """Decode a transformed text; optionally the original UTF-8 bytes of each of its characters."""
    out: list[str] = []
    nbytes: list[int] = []
    pending: str | None = None  # TITLE / CAPNEXT / ESC waiting for its character, or ALLCAPS
    in_allcaps = False
    for pos, ch in enumerate(text):
        if pending == ESC:
            orig = ch
            pending = None
            in_allcaps = False
        elif ch in OPERATORS:
            if pending is not None:
                raise CaseOpsError(f"operator U+{ord(ch):04X} at character {pos} follows another operator")
            pending = ch
            in_allcaps = False
            if want_bytes:
                nbytes.append(0)
            continue
        elif pending is not None:
            if not ch.isalpha():
                raise CaseOpsError(f"case operator at character {pos - 1} is not followed by a letter")
            orig = ch.upper()
            in_allcaps = pending == ALLCAPS
            pending = None
        elif in_allcaps and ch.isalpha():
            orig = ch.upper()
        else:
            orig = ch
            in_allcaps = False
        if len(orig) != 1:
            raise CaseOpsError(f"character {pos} ({ch!r}) has no one-character capital")
        out.append(orig)
        if want_bytes:
            nbytes.append(len(orig.encode("utf-8", "surrogatepass")))
    if pending is not None:
        raise CaseOpsError("dangling case operator at the end of the text")
    return "".join(out), nbytes


def caseops_decode(text: str) -> str:
    """The exact inverse of `caseops_encode` (CaseOpsError for a text `encode` cannot produce)."""
    return _walk(text, False)[0]


encode = caseops_encode  # the module's API: caseops.encode / caseops.decode
decode = caseops_decode


def original_char_bytes(text: str) -> list[int]:
    """For each character of a transformed text, the UTF-8 bytes of the original it stands for."""
    return _walk(text, True)[1]
