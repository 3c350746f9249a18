"""Class descriptions in CuPL format (`{class name: [sentence, ...]}`) for Stage I.

Also the table of where each benchmark dataset's file comes from, shared by
`default_descriptions_path` and the download command.
"""

import difflib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from anchoropt.backbone import TextEncoder
from anchoropt.errors import ConfigError, DataError
from anchoropt.method.names import compact_classname, coop_renamed, loose_classname, normalize_classname
from anchoropt.models.clip_parts import normalize

DESCRIPTIONS_DIR = Path(__file__).absolute().parents[2] / "descriptions"
DESCRIPTION_FILE_KEY = "TRAINER.ANCHOROPT.DESCRIPTIONS"
MAX_PER_CLASS_KEY = "TRAINER.ANCHOROPT.MAX_TEMPLATE_LENGTH"
_SHOWN_CLASSES = 10  # unmatched classes named in an error (a wrong file can miss all 1000 ImageNet classes)
DOWNLOAD_HINT = "run `anchoropt-descriptions-download` (see descriptions/README.md)"

# The AnchorOPT authors' copies of the CuPL files (Pratt et al. 2023), re-keyed
# to CoOp's class names; pinned to a commit so the bytes never change.
_ATPROMPT = "https://raw.githubusercontent.com/zhengli97/ATPrompt/86980a10041094aeb071badab73597d536a59c73/templates/"
_CUPL = "https://raw.githubusercontent.com/sarahpratt/CuPL/719619c829792ff8f37298266e941b7f077c7f5c/all_prompts/full_prompts/"


@dataclass(frozen=True)
class DescriptionSource:
    file_name: str
    num_classes: int  # classes of the dataset under CoOp's protocol; the file must cover at least this many keys
    urls: tuple[str, ...]  # tried in order
    git_blob: str  # git object id of the expected bytes (sha1 of "blob <size>\0" + content)


DESCRIPTION_SOURCES: dict[str, DescriptionSource] = {
    "ImageNet": DescriptionSource(
        "imagenet_prompts_full.json",
        1000,
        (_ATPROMPT + "imagenet_prompts_full.json", _CUPL + "imagenet_prompts_full.json"),
        "3eca90382a18a1c54586f719cb58e27329063259",
    ),
    "Caltech101": DescriptionSource(
        "cal_prompts_full.json", 100, (_ATPROMPT + "cal_prompts_full.json",), "9887dfe48403524e2260c6a66780b46a87d612a9"
    ),
    "OxfordPets": DescriptionSource(
        "pets_prompts_full.json",
        37,
        (_ATPROMPT + "pets_prompts_full.json",),
        "dfe38ce97aaa3e385590ad45b176d9ce9c3dbe20",
    ),
    "StanfordCars": DescriptionSource(
        "cars_prompts_full.json",
        196,
        (_ATPROMPT + "cars_prompts_full.json",),
        "bd461921edaa55d5633bd586a9c78ba223f24266",
    ),
    "OxfordFlowers": DescriptionSource(
        "flower_prompts_full.json",
        102,
        (_ATPROMPT + "flower_prompts_full.json",),
        "2a462100dd308e8da86f8544327958850b33e811",
    ),
    "Food101": DescriptionSource(
        "food_prompts_full.json",
        101,
        (_ATPROMPT + "food_prompts_full.json",),
        "9de2619fc7db276ba53e715389745168bca21c64",
    ),
    "FGVCAircraft": DescriptionSource(
        "airplane_prompts_full.json",
        100,
        (_ATPROMPT + "airplane_prompts_full.json",),
        "030f9aed70989a19dfa5280584d1d8ec667549dc",
    ),
    "SUN397": DescriptionSource(
        "sun_prompts_full.json", 397, (_ATPROMPT + "sun_prompts_full.json",), "ce0691df0d981218c5cfdef5a83889460f6a987a"
    ),
    "DescribableTextures": DescriptionSource(
        "texture_prompts_full.json",
        47,
        (_ATPROMPT + "texture_prompts_full.json",),
        "fec0ef19f0a3922fafd35971789ba362a3cf334e",
    ),
    "EuroSAT": DescriptionSource(
        "eurosat_prompts_full.json",
        10,
        (_ATPROMPT + "eurosat_prompts_full.json",),
        "923e091313be63bde11f94fb67c6b324a0154c19",
    ),
    "UCF101": DescriptionSource(
        "ucf_prompts_full.json", 101, (_ATPROMPT + "ucf_prompts_full.json",), "0eb6e2e97a529d665cc3490fc265796a289f6fde"
    ),
}
# Test-only ImageNet variants share ImageNet's classes, so they share its descriptions.
DATASET_ALIASES = {name: "ImageNet" for name in ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")}


def description_dataset(dataset_name: str) -> str:
    """The key of `DESCRIPTION_SOURCES` serving a dataset registry name (case-insensitive)."""
    known = {name.casefold(): name for name in [*DESCRIPTION_SOURCES, *DATASET_ALIASES]}
    canonical = known.get(dataset_name.casefold())
    if canonical is None:
        raise ConfigError(
            f"no default description file for dataset '{dataset_name}' (known: {', '.join(DESCRIPTION_SOURCES)} and "
            f"{', '.join(DATASET_ALIASES)}); set {DESCRIPTION_FILE_KEY} to a CuPL-format JSON file"
        )
    return DATASET_ALIASES.get(canonical, canonical)


def default_descriptions_path(dataset_name: str, root: str | Path | None = None) -> Path:
    """Where the dataset's description file lives: `root` (default: the repository's descriptions/).

    A dataset without a download source may ship its own file, ``<registry name>.json`` (the toy world's
    generated descriptions).
    """
    folder = Path(root if root is not None else DESCRIPTIONS_DIR)
    shipped = folder / f"{dataset_name}.json"
    if (
        dataset_name.casefold() not in {n.casefold() for n in [*DESCRIPTION_SOURCES, *DATASET_ALIASES]}
        and shipped.is_file()
    ):
        return shipped
    return folder / DESCRIPTION_SOURCES[description_dataset(dataset_name)].file_name


def parse_descriptions(text: str | bytes, source: str | Path) -> dict[str, list[str]]:
    """Validate CuPL-format JSON; sentences are stripped and empty ones dropped."""
    expected = "a JSON object mapping each class name to a list of sentences"
    try:
        content = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"description file {source} is not valid JSON ({error}); expected {expected}") from error
    if not isinstance(content, dict):
        raise DataError(f"description file {source} holds a JSON {type(content).__name__}; expected {expected}")
    descriptions = {}
    for key, sentences in content.items():
        if not isinstance(sentences, list) or not all(isinstance(item, str) for item in sentences):
            raise DataError(f"description file {source}: entry '{key}' is not a list of strings; expected {expected}")
        descriptions[key] = [item.strip() for item in sentences if item.strip()]
    return descriptions


def read_descriptions(path: str | Path) -> dict[str, list[str]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"description file not found: {path} ({DOWNLOAD_HINT}, or set {DESCRIPTION_FILE_KEY})")
    return parse_descriptions(path.read_bytes(), path)


def _keys_by_form(keys: Sequence[str], form: Callable[[str], str]) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for key in keys:
        table.setdefault(form(key), []).append(key)
    return table


def match_description_keys(classnames: Sequence[str], keys: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Map each class name to a key: exact, then case/underscore-insensitive, then ignoring
    punctuation and CamelCase, then through CoOp's renames of raw folder names, then ignoring spaces.

    Returns (matched {class: key}, unmatched {class: hint naming ambiguous or close keys}).
    """
    forms = (normalize_classname, loose_classname, coop_renamed, compact_classname)
    tables = [_keys_by_form(keys, form) for form in forms]
    loose_keys = {loose_classname(key): key for key in keys}
    key_set = set(keys)
    matched: dict[str, str] = {}
    unmatched: dict[str, str] = {}
    for name in classnames:
        if name in key_set:
            matched[name] = name
            continue
        candidates = next((table[form(name)] for form, table in zip(forms, tables) if form(name) in table), [])
        if len(candidates) == 1:
            matched[name] = candidates[0]
        elif candidates:
            unmatched[name] = "ambiguous: " + ", ".join(repr(key) for key in candidates)
        else:
            close = difflib.get_close_matches(loose_classname(name), list(loose_keys), n=3, cutoff=0.6)
            unmatched[name] = (
                "close: " + ", ".join(repr(loose_keys[item]) for item in close) if close else "no close key"
            )
    return matched, unmatched


def load_descriptions(path: str | Path, classnames: Sequence[str], max_per_class: int) -> list[list[str]]:
    """The first `max_per_class` sentences for each class, ordered like `classnames`.

    Raises DataError naming every class without (usable) descriptions; warns if
    some classes have fewer than `max_per_class` sentences. Long sentences are
    kept: the tokenizer truncates them.
    """
    if max_per_class < 1:
        raise ConfigError(f"{MAX_PER_CLASS_KEY} must be >= 1, got {max_per_class}")
    path = Path(path)
    descriptions = read_descriptions(path)
    matched, unmatched = match_description_keys(classnames, list(descriptions))
    if unmatched:
        shown = list(unmatched.items())[:_SHOWN_CLASSES]
        more = f"; and {len(unmatched) - len(shown)} more" if len(unmatched) > len(shown) else ""
        raise DataError(
            f"description file {path} has no entry for {len(unmatched)} of {len(classnames)} classes: "
            + "; ".join(f"'{name}' ({hint})" for name, hint in shown)
            + more
            + " (expected a key per class name, matched ignoring case, underscores and punctuation)"
        )
    empty = [name for name in classnames if not descriptions[matched[name]]]
    if empty:
        raise DataError(
            f"description file {path} has an empty sentence list for: {', '.join(repr(name) for name in empty)}"
        )
    short = [
        f"{name} ({len(descriptions[matched[name]])})"
        for name in classnames
        if len(descriptions[matched[name]]) < max_per_class
    ]
    if short:
        warnings.warn(
            f"description file {path}: {len(short)} classes have fewer than {max_per_class} sentences, using all "
            "they have: " + ", ".join(short),
            stacklevel=2,
        )
    return [descriptions[matched[name]][:max_per_class] for name in classnames]


@dataclass
class DescriptionFeatures:
    """Normalised features of every description sentence, flattened over classes."""

    features: torch.Tensor  # [P, embed_dim], fp32
    owner: torch.Tensor  # [P] class index of each sentence
    per_class: list[int]  # sentences per class

    @property
    def num_classes(self) -> int:
        return len(self.per_class)

    def to(self, device: torch.device | str) -> "DescriptionFeatures":
        return DescriptionFeatures(self.features.to(device), self.owner.to(device), list(self.per_class))


@torch.no_grad()
def encode_descriptions(text_encoder: TextEncoder, descriptions: Sequence[Sequence[str]]) -> DescriptionFeatures:
    """Encode the sentences of each class once (tokenizer truncation, no graph) and normalise them."""
    sentences = [sentence for per_class in descriptions for sentence in per_class]
    owner = torch.tensor([c for c, per_class in enumerate(descriptions) for _ in per_class], dtype=torch.long)
    features = normalize(text_encoder.encode_texts(sentences)).detach()
    return DescriptionFeatures(features, owner.to(features.device), [len(d) for d in descriptions])
