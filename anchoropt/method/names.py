"""Class-name normalisation shared by description matching and per-class scoring.

Dataset classes and description-file keys spell the same class differently
("american_bulldog" vs "American Bulldog", "Apply_Eye_Makeup" vs "Apply Eye
Makeup"). Two levels of tolerance are offered so that callers can prefer the
stricter one and fall back to the looser one only when needed.
"""

import re

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")

# Raw folder names that CoOp's dataset classes rename; a user whose dataset
# still carries the raw name should match the description keyed by the CoOp name.
COOP_RENAMES = {
    # Caltech101
    "airplanes": "airplane",
    "faces": "face",
    "leopards": "leopard",
    "motorbikes": "motorbike",
    # EuroSAT
    "annual crop": "annual crop land",
    "herbaceous vegetation": "herbaceous vegetation land",
    "highway": "highway or road",
    "industrial": "industrial buildings",
    "pasture": "pasture land",
    "permanent crop": "permanent crop land",
    "residential": "residential buildings",
    "sea lake": "sea or lake",
}


def normalize_classname(name: str) -> str:
    """Case-insensitive, underscores read as spaces, whitespace collapsed."""
    return " ".join(name.replace("_", " ").split()).casefold()


def loose_classname(name: str) -> str:
    """Like `normalize_classname`, but also splits CamelCase and treats any
    punctuation (hyphens, dots, parentheses, apostrophes) as a space."""
    spaced = _CAMEL_BOUNDARY.sub(" ", name.replace("_", " "))
    return " ".join(_NON_ALNUM.sub(" ", spaced.casefold()).split())


def coop_renamed(name: str) -> str:
    """The loose form of the name CoOp gives this raw folder name (or of the name itself)."""
    loose = loose_classname(name)
    return COOP_RENAMES.get(loose, loose)


def compact_classname(name: str) -> str:
    """The loosest form: `coop_renamed` without spaces ("wild cat" == "wildcat")."""
    return coop_renamed(name).replace(" ", "")
