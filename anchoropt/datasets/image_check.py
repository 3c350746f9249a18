"""A cheap check that the images a run will read are images, before its first training step.

Reading every image in full would cost as much as an epoch over the test set; a
0-byte file or a file that is not an image at all (an HTML error page saved as
``.jpg``, a half-copied file padded with zeros) shows in its first bytes. Each
file is opened once and its first 16 bytes compared with the signatures of the
formats datasets use; a file with no known signature is handed to PIL, which
identifies any format it can decode from the header alone.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from anchoropt.errors import DataError

HEAD_BYTES = 16
SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",  # BMP
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
)
EXAMPLES = 3


def _known_signature(head: bytes) -> bool:
    if head.startswith(SIGNATURES):
        return True
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def image_problem(path: str) -> str | None:
    """Why ``path`` cannot be an image ('empty file', 'not an image', ...), or None when it looks like one."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return (e.strerror or str(e)).lower()
    if not head:
        return "empty file"
    if _known_signature(head):
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return "not an image"


def unreadable_images(paths: Iterable[str]) -> list[tuple[str, str]]:
    """``(path, problem)`` for each path (once) that ``image_problem`` rejects."""
    seen: set[str] = set()
    bad = []
    for path in paths:
        if path in seen:
            continue
        seen.add(path)
        problem = image_problem(path)
        if problem:
            bad.append((path, problem))
    return bad


def check_images(splits: Sequence[tuple[str, Sequence]], dataset: str) -> None:
    """Raise one ``DataError`` naming the unreadable images of ``splits`` ((name, items) with ``.impath``)."""
    bad: list[tuple[str, str]] = []
    total = 0
    for _, items in splits:
        total += len(items)
        bad += unreadable_images(item.impath for item in items)
    if not bad:
        return
    bad = list(dict(bad).items())
    names = ", ".join(name for name, items in splits if items)
    shown = "; ".join(f"{path} ({problem})" for path, problem in bad[:EXAMPLES])
    more = f" and {len(bad) - EXAMPLES} more" if len(bad) > EXAMPLES else ""
    raise DataError(
        f"{dataset}: {len(bad)} of the {total} images this run reads ({names}) are not readable images: "
        f"{shown}{more}; replace them (e.g. from the original archive) before training"
    )
