"""Console commands that provide class-description files (CuPL format).

``download_main``: fetch the published files for the 11 benchmark datasets,
verify them and install them under descriptions/.
``generate_main``: write descriptions for a new dataset with any
OpenAI-compatible chat-completions endpoint.

Network access goes through `fetch_bytes` and `post_json` only, so tests can
replace them.
"""

import argparse
import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from anchoropt import __version__
from anchoropt.cli.errors import run_cli
from anchoropt.errors import ConfigError, DataError, UserError
from anchoropt.fileio import atomic_write_bytes
from anchoropt.method.descriptions import (
    DESCRIPTION_SOURCES,
    DESCRIPTIONS_DIR,
    DescriptionSource,
    description_dataset,
    parse_descriptions,
)

USER_AGENT = f"anchoropt/{__version__}"

SYSTEM_PROMPT = "You write short, factual visual descriptions of categories for image classification."
USER_PROMPT_TEMPLATE = (
    'Write {count} different sentences describing what a photo of a "{classname}"{category_clause} looks like. '
    'Each sentence must name "{classname}" and mention visual features that help to recognise it in a photo '
    "(shape, colour, texture, parts, size, typical surroundings). "
    "Keep each sentence under 30 words. Answer with the sentences only, one per line, without numbering."
)
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d+[.):]|\d+\s+-)\s*")


class DescriptionServiceError(UserError):
    """The description download or the language-model endpoint failed."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


# --------------------------------------------------------------------------- network boundary


def fetch_bytes(url: str, timeout: float = 60.0) -> bytes:
    """GET a URL (the only network read of the download command)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        raise DescriptionServiceError(f"{url} answered HTTP {error.code}", retryable=error.code >= 500) from error
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise DescriptionServiceError(
            f"cannot reach {url}: {getattr(error, 'reason', error)}", retryable=True
        ) from error


def post_json(url: str, payload: dict[str, Any], headers: dict[str, str], timeout: float = 120.0) -> dict[str, Any]:
    """POST JSON and decode the JSON answer (the only network call of the generate command)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode("utf-8"),
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read()[:300].decode("utf-8", "replace")
        raise DescriptionServiceError(
            f"{url} answered HTTP {error.code}: {detail}", retryable=error.code == 429 or error.code >= 500
        ) from error
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise DescriptionServiceError(
            f"cannot reach {url}: {getattr(error, 'reason', error)}", retryable=True
        ) from error
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        raise DescriptionServiceError(f"{url} did not answer with JSON: {body[:200]!r}") from error


def pause(seconds: float) -> None:
    time.sleep(seconds)


# --------------------------------------------------------------------------- shared helpers


def git_blob_id(data: bytes) -> str:
    """The id git gives a file with these bytes (published files are pinned by it)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --------------------------------------------------------------------------- download


def verify_published(data: bytes, source: DescriptionSource, origin: str) -> dict[str, list[str]]:
    """Check downloaded bytes: exact published content, valid CuPL JSON, enough non-empty classes."""
    blob = git_blob_id(data)
    if blob != source.git_blob:
        raise DataError(
            f"{origin}: content differs from the published {source.file_name} (git blob {blob}, expected "
            f"{source.git_blob})"
        )
    descriptions = parse_descriptions(data, origin)
    empty = [key for key, sentences in descriptions.items() if not sentences]
    if empty:
        raise DataError(f"{origin}: classes without sentences: {', '.join(empty[:10])}")
    if len(descriptions) < source.num_classes:
        raise DataError(f"{origin}: {len(descriptions)} classes, expected at least {source.num_classes}")
    return descriptions


def _obtain(source: DescriptionSource, from_dir: Path | None, timeout: float) -> tuple[bytes, str]:
    if from_dir is not None:
        origin = from_dir / source.file_name
        if not origin.is_file():
            raise DataError(f"{origin} not found")
        return origin.read_bytes(), str(origin)
    failures = []
    for url in source.urls:
        try:
            return fetch_bytes(url, timeout=timeout), url
        except DescriptionServiceError as error:
            failures.append(str(error))
    raise DescriptionServiceError("; ".join(failures))


def install_published(
    dataset: str, dest: Path, from_dir: Path | None = None, force: bool = False, timeout: float = 60.0
) -> str:
    """Install one dataset's file; returns a status line. Raises UserError on failure."""
    source = DESCRIPTION_SOURCES[dataset]
    target = dest / source.file_name
    if target.is_file() and not force:
        existing = target.read_bytes()
        if git_blob_id(existing) == source.git_blob:
            return f"present    {target} (verified)"
        return f"kept       {target} (differs from the published file; --force replaces it)"
    data, origin = _obtain(source, from_dir, timeout)
    descriptions = verify_published(data, source, origin)
    atomic_write_bytes(target, data)
    counts = [len(sentences) for sentences in descriptions.values()]
    return f"installed  {target} ({len(counts)} classes, {min(counts)}-{max(counts)} sentences each, from {origin})"


def build_download_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anchoropt-descriptions-download",
        description="Download and verify the published CuPL class descriptions for the 11 benchmark datasets.",
    )
    parser.add_argument(
        "--dest", type=Path, default=DESCRIPTIONS_DIR, help=f"folder to install into (default: {DESCRIPTIONS_DIR})"
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        metavar="NAME",
        help=f"dataset names (default: all of {', '.join(DESCRIPTION_SOURCES)})",
    )
    parser.add_argument(
        "--from-dir",
        type=Path,
        help=(
            "copy from a local folder holding the files (e.g. an ATPrompt checkout's templates/) instead of downloading"
        ),
    )
    parser.add_argument("--force", action="store_true", help="replace files that are already present")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per download")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def download(argv: list[str] | None = None) -> int:
    args = build_download_parser().parse_args(argv)
    datasets = (
        list(dict.fromkeys(description_dataset(name) for name in args.datasets))
        if args.datasets
        else list(DESCRIPTION_SOURCES)
    )
    failures = []
    for dataset in datasets:
        try:
            status = install_published(dataset, args.dest, args.from_dir, args.force, args.timeout)
        except UserError as error:
            failures.append(dataset)
            status = f"FAILED     {error}"
        print(f"{dataset:<20} {status}", flush=True)
    if failures:
        raise DataError(f"{len(failures)} of {len(datasets)} description files not installed: {', '.join(failures)}")
    return 0


# --------------------------------------------------------------------------- generate


def read_classnames(path: Path) -> list[str]:
    """One class name per line; blank lines and lines starting with '#' are skipped."""
    if not path.is_file():
        raise DataError(f"class-name file not found: {path} (expected one class name per line)")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [name for name in names if name and not name.startswith("#")]
    if not names:
        raise DataError(f"class-name file {path} lists no class names (expected one per line)")
    return list(dict.fromkeys(names))


def build_prompt(classname: str, count: int, category: str | None) -> str:
    clause = f" (a type of {category})" if category else ""
    return USER_PROMPT_TEMPLATE.format(count=count, classname=classname, category_clause=clause)


def parse_sentences(content: str, count: int) -> list[str]:
    """Sentences from a model answer: one per line, list markers and quotes removed, duplicates dropped."""
    sentences = []
    for line in content.splitlines():
        sentence = _LIST_MARKER.sub("", line).strip().strip('"').strip()
        if sentence and sentence not in sentences:
            sentences.append(sentence)
    return sentences[:count]


def _answer_text(answer: dict[str, Any], url: str) -> str:
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as error:
        raise DescriptionServiceError(
            f"{url} answered without choices[0].message.content: {str(answer)[:200]}"
        ) from error
    if not isinstance(content, str):
        raise DescriptionServiceError(f"{url} answered with non-text content: {str(content)[:200]}")
    return content


def describe_class(classname: str, args: argparse.Namespace, api_key: str) -> list[str]:
    url = args.base_url.rstrip("/") + "/chat/completions"
    payload = {
        "model": args.model,
        "temperature": args.temperature,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": build_prompt(classname, args.per_class, args.category)},
        ],
    }
    headers = {"Authorization": f"Bearer {api_key}"}
    for attempt in range(args.retries + 1):
        try:
            sentences = parse_sentences(
                _answer_text(post_json(url, payload, headers, timeout=args.timeout), url), args.per_class
            )
            if sentences:
                return sentences
            error = DescriptionServiceError(f"{url} answered with no sentences for '{classname}'", retryable=True)
        except DescriptionServiceError as failure:
            error = failure
        if not error.retryable or attempt == args.retries:
            raise error
        pause(2.0**attempt)
    raise AssertionError("unreachable")


def build_generate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anchoropt-descriptions-generate",
        description="Write CuPL-format class descriptions with an OpenAI-compatible chat-completions endpoint.",
    )
    parser.add_argument("classnames", type=Path, help="text file with one class name per line")
    parser.add_argument(
        "--output", type=Path, required=True, help="JSON file to write (classes already in it are kept and skipped)"
    )
    parser.add_argument("--model", required=True, help="model name sent to the endpoint")
    parser.add_argument(
        "--base-url",
        default="https://api.openai.com/v1",
        help="endpoint base URL; /chat/completions is appended (default: %(default)s)",
    )
    parser.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="environment variable that holds the API key (default: %(default)s)",
    )
    parser.add_argument(
        "--per-class",
        type=int,
        default=10,
        help="sentences to ask for per class; Stage I uses the first MAX_TEMPLATE_LENGTH (default: %(default)s)",
    )
    parser.add_argument(
        "--category", help='what the classes are, e.g. "flower" or "satellite land-use class"; added to the prompt'
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.7,
        help="sampling temperature sent to the endpoint (default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: %(default)s)")
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        help="retries after rate limits, server errors and empty answers (default: %(default)s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="regenerate classes already present in --output")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def generate(argv: list[str] | None = None) -> int:
    args = build_generate_parser().parse_args(argv)
    if args.per_class < 1:
        raise ConfigError(f"--per-class must be >= 1, got {args.per_class}")
    api_key = os.environ.get(args.api_key_env, "")
    if not api_key:
        raise ConfigError(
            f"environment variable {args.api_key_env} is not set (it must hold the API key; choose another with "
            "--api-key-env)"
        )
    classnames = read_classnames(args.classnames)
    descriptions = {}
    if args.output.is_file() and not args.overwrite:
        descriptions = parse_descriptions(args.output.read_bytes(), args.output)
    todo = [name for name in classnames if not descriptions.get(name)]
    print(
        f"{len(classnames) - len(todo)} of {len(classnames)} classes already in {args.output}; generating "
        f"{len(todo)} with {args.model} at {args.base_url}"
    )
    short = []
    for index, name in enumerate(todo, 1):
        sentences = describe_class(name, args, api_key)
        descriptions[name] = sentences
        # Written after every class so an interrupted run resumes where it stopped.
        atomic_write_bytes(args.output, (json.dumps(descriptions, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        if len(sentences) < args.per_class:
            short.append(name)
        print(f"[{index}/{len(todo)}] {name}: {len(sentences)} sentences", flush=True)
    if short:
        print(f"warning: fewer than {args.per_class} sentences for: {', '.join(short)}", file=sys.stderr)
    print(f"wrote {args.output}")
    return 0


download_main = run_cli(download)
generate_main = run_cli(generate)
