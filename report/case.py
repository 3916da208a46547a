"""The optional case details a user may type for the report; checked here, kept only in memory."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# HAM10000's `localization` values, so a site chosen here means what it means in the training data.
BODY_SITES: tuple[str, ...] = ("abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand",
                               "lower extremity", "neck", "scalp", "trunk", "upper extremity", "unknown")
SEXES: tuple[str, ...] = ("male", "female", "other", "unknown")
AGE_RANGE = (0, 120)
MAX_CHARS = {"reference": 64, "referring_clinician": 120, "notes": 2000}
MAX_NOTE_LINES = 30  # with MAX_CHARS["notes"], keeps the report to two pages at most

_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class CaseFields:
    """Case details printed in the report. Every field is optional; invalid values raise ValueError."""
    reference: str = ""
    age: int | None = None
    sex: str = ""
    body_site: str = ""
    notes: str = ""
    referring_clinician: str = ""

    def __post_init__(self):
        normalised = {"reference": _one_line(self.reference, "reference"),
                      "referring_clinician": _one_line(self.referring_clinician, "referring_clinician"),
                      "notes": _notes(self.notes), "age": _age(self.age),
                      "sex": _choice(self.sex, SEXES, "sex"),
                      "body_site": _choice(self.body_site, BODY_SITES, "body_site")}
        for name, value in normalised.items():  # frozen: the checked values are written once, here
            object.__setattr__(self, name, value)


def _text(value, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"Case field '{field}' must be text, not {type(value).__name__}.")
    # Control characters cannot be printed; line breaks are kept (notes) or folded (single-line fields).
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = "".join(ch for ch in value if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    value = value.strip()
    if len(value) > MAX_CHARS[field]:
        raise ValueError(f"Case field '{field}' is {len(value)} characters long; at most "
                         f"{MAX_CHARS[field]} are allowed.")
    return value


def _one_line(value, field: str) -> str:
    return _SPACES.sub(" ", _text(value, field))


def _notes(value) -> str:
    notes = _text(value, "notes")
    lines = notes.count("\n") + 1 if notes else 0
    if lines > MAX_NOTE_LINES:
        raise ValueError(f"Case field 'notes' has {lines} lines; at most {MAX_NOTE_LINES} are allowed.")
    return notes


def _age(value) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError("Case field 'age' must be a whole number of years.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Case field 'age' must be a whole number of years, not {value!r}.") from None
    if not number.is_integer():
        raise ValueError(f"Case field 'age' must be a whole number of years, not {value!r}.")
    low, high = AGE_RANGE
    if not low <= number <= high:
        raise ValueError(f"Case field 'age' must be between {low} and {high} years, not {int(number)}.")
    return int(number)


def _choice(value, allowed: tuple[str, ...], field: str) -> str:
    text = _SPACES.sub(" ", "" if value is None else str(value)).strip().lower()
    if text and text not in allowed:
        raise ValueError(f"Case field '{field}' must be one of: {', '.join(allowed)} (or left empty); "
                         f"got {value!r}.")
    return text
