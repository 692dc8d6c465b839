"""`python -m pos_bridge.scanner`: the scanner service's command (docs/scanners.md).

`decode IMAGE...` is for operators and tests: what the camera scanner would read in each
image, one JSON line per image, so a label or a camera's picture can be checked without
the bus. The scanner service itself will be another subcommand of this group.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np

from .decode import Decoder


@click.group()
def cli() -> None:
    """The scanner service: HID, serial and camera scanners on the store's bus."""


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--budget-ms", type=click.FloatRange(min=0), default=None,
              help="Time for the second looks at an image that the first finds nothing in.")
def decode(images: tuple[str, ...], budget_ms: float | None) -> None:
    """Prints the codes in each IMAGE as one JSON line: {"image", "codes": [{"text",
    "symbology", "format", "raw_b64" when the bytes are not the text's UTF-8}], "ms"}.
    An image that cannot be read gives a line with "error" and exit status 1 at the end."""
    decoder = Decoder() if budget_ms is None else Decoder(budget_ms=budget_ms)
    failed = False
    for name in images:
        line: dict[str, Any] = {"image": name}
        image, error = _load(name)
        if image is None:
            line["error"] = error
            failed = True
        else:
            started = time.perf_counter()
            try:
                codes = decoder.decode(image)
            except ValueError as exc:
                line["error"] = str(exc)
                failed = True
            else:
                line["codes"] = [_code(code.to_scan().to_data()) for code in codes]
                line["ms"] = round((time.perf_counter() - started) * 1000, 2)
        # ASCII only: U+0085 or U+2028 in a code would split the line for some readers.
        click.echo(json.dumps(line))
    sys.exit(1 if failed else 0)


def _load(name: str) -> tuple[Any, str]:
    """(the image, "") or (None, why it cannot be read)."""
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        return None, f"cannot read the file: {exc.strerror or exc}"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        return None, "not an image OpenCV can read"
    if image.dtype != np.uint8:
        return None, "not an 8-bit image"
    return image, ""


def _code(data: dict[str, Any]) -> dict[str, Any]:
    out = {"text": data["code"], "symbology": data["symbology"], "format": data.get("format")}
    if "raw_b64" in data:
        out["raw_b64"] = data["raw_b64"]
    return out


if __name__ == "__main__":
    cli()
