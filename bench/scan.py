"""The camera scanner's decoding on the ZXing corpus, beside plain zxing-cpp and OpenCV.

What runs, in this one process, on every image of every folder of `--corpus`'s `qr/` and
`barcodes/` (the ZXing project's black-box test images: real photographs of QR codes and
retail barcodes, and `falsepositives/`, pictures with no code at all):

* the scanner's decoder (`pos_bridge.scanner.decode.Decoder`, as the camera reader runs it:
  zxing-cpp's first look at the shop's formats, then the second looks within its time
  budget when the first finds nothing);
* plain zxing-cpp: `zxingcpp.read_barcodes(image)` with its default options (all formats);
* OpenCV's `cv2.QRCodeDetector().detectAndDecode(image)`, on the QR folders and the false
  positives (it reads only QR codes).

Each image is decoded by each of them in turn (the order rotating from image to image, so
drift on the machine falls on all alike), first as it is in the corpus ("full": 240x240 to
2,560x1,920 pixels) and then scaled, keeping its proportions, to fit 640x480 ("640x480":
the frame a store's camera scanner gives). Images are read and scaled before the clock
starts; the time is `time.perf_counter()` around the decode call alone, BGR in, codes out,
and beside it the decoding thread's CPU time (`time.thread_time()`), which other work on
the machine does not inflate (OpenCV's own worker threads are not in it).
Each decoder first decodes one image untimed (zxing-cpp and OpenCV set themselves up on
their first call).

An image is read when one of the codes found is exactly its expected text (`N.txt`, UTF-8;
`N.bin` as ISO-8859-1 where there is one), line ends normalised (`\\r\\n` -> `\\n`). A UPC-A
whose decoder reports the EAN-13 form (a leading 0) counts as read for every decoder: it is
the same symbol (the scanner reports the 12-digit UPC-A itself). An image where codes were
found but not the expected one is a wrong read; any code found in `falsepositives/` is a
false read. Percentiles are nearest-rank over the images of the group.

Targets (2-core store box): QR >= 98 % and EAN/UPC >= 95 % of the corpus images read
exactly, zero false and zero wrong reads, p50 <= 10 ms and p99 <= 60 ms per 640x480 image
(all images of the corpus, false positives included). The figures are printed for people,
then the last line is the same figures as one JSON object.

Then, unless `--no-route`, the routing half in its own processes (`bench/scan_route.py`,
with its defaults: a real broker and `edge serve`): scan -> lane (`cmd/scan` received) and
scan -> staff page latency p50/p99 beside the bare MQTT echo and a relayed echo, measured
side by side; its figures go into this run's JSON line under "route".

    .venv/bin/python bench/scan.py [--corpus DIR] [--budget-ms 35] [--repeat 1] [--no-route]

`--corpus` defaults to `shared/corpus` in the folder that holds this repository.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zxingcpp

from pos_bridge.scanner.decode import DEFAULT_BUDGET_MS, Decoder

ROOT = Path(__file__).resolve().parent.parent
SIZES = ("full", "640x480")
EAN_UPC = ("ean13-1", "ean13-2", "upca-1")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")

Image = np.ndarray[Any, Any]
Reader = Callable[[Image], list[tuple[str, ...]]]  # per code: its text (and bytes as Latin-1)


@dataclass
class Sample:
    folder: str  # "qr/qrcode-1", "barcodes/falsepositives", ...
    name: str
    expected: str | None  # None: no code in it
    binary: bool  # expected is N.bin's bytes as Latin-1 (else N.txt's text)
    frames: dict[str, Image]  # by size


@dataclass
class Tally:
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # the decoding thread's CPU time
    read: int = 0
    wrong: int = 0
    images: int = 0


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def normalised(text: str) -> str:
    return text.replace("\r\n", "\n")


def load(corpus: Path) -> list[Sample]:
    samples: list[Sample] = []
    for top in ("qr", "barcodes"):
        for folder in sorted(p for p in (corpus / top).iterdir() if p.is_dir()):
            for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
                if frame is None:
                    print(f"skipped, not readable: {image}", file=sys.stderr)
                    continue
                samples.append(Sample(f"{top}/{folder.name}", image.name,
                                      expected_of(image), image.with_suffix(".bin").exists(),
                                      {"full": frame, "640x480": fit(frame, 640, 480)}))
    return samples


def expected_of(image: Path) -> str | None:
    binary, text = image.with_suffix(".bin"), image.with_suffix(".txt")
    if binary.exists():
        return normalised(binary.read_bytes().decode("latin-1"))
    if text.exists():
        return normalised(text.read_text(encoding="utf-8"))
    return None


def fit(frame: Image, width: int, height: int) -> Image:
    """Scaled up or down, proportions kept, to fit width x height."""
    h, w = frame.shape[:2]
    factor = min(width / w, height / h)
    if abs(factor - 1) < 1e-9:
        return frame
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if factor < 1
                      else cv2.INTER_LINEAR)


def readers(budget_ms: float) -> dict[str, Reader]:
    scanner = Decoder(budget_ms=budget_ms)
    first_only = Decoder(fallbacks=[])
    detector = cv2.QRCodeDetector()

    def ours(frame: Image) -> list[tuple[str, ...]]:
        return [(c.text, c.raw.decode("latin-1")) for c in scanner.decode(frame)]

    def ours_first(frame: Image) -> list[tuple[str, ...]]:
        return [(c.text, c.raw.decode("latin-1")) for c in first_only.decode(frame)]

    def plain_zxing(frame: Image) -> list[tuple[str, ...]]:
        return [(b.text, bytes(b.bytes).decode("latin-1")) for b in zxingcpp.read_barcodes(frame)]

    def opencv(frame: Image) -> list[tuple[str, ...]]:
        try:
            text, _points, _straight = detector.detectAndDecode(frame)
        except (UnicodeDecodeError, cv2.error):  # bytes not UTF-8; a mode it cannot decode
            return [("\ufffd",)]  # a code, but not its text: not read
        return [(text,)] if text else []

    return {"scanner": ours, "scanner_first_look": ours_first, "zxing_default": plain_zxing,
            "opencv_qr": opencv}


def matches(code: tuple[str, ...], expected: str, *, binary: bool) -> bool:
    """The code's text is the expected text (its bytes as Latin-1: the expected `.bin`)."""
    found = normalised(code[-1] if binary else code[0])
    if found == expected:
        return True
    return len(expected) == 12 and expected.isdigit() and found == "0" + expected


def applies(reader: str, folder: str) -> bool:
    return reader != "opencv_qr" or folder.startswith("qr/") or folder.endswith("falsepositives")


def measure(samples: list[Sample], budget_ms: float, repeat: int) -> dict[str, Any]:
    decode = readers(budget_ms)
    names = list(decode)
    for name in names:  # set-up on the first call, untimed
        decode[name](samples[0].frames["full"])
    tallies: dict[tuple[str, str, str], Tally] = {}
    for index, sample in enumerate(samples):
        order = names[index % len(names):] + names[:index % len(names)]
        for size in SIZES:
            frame = sample.frames[size]
            for name in order:
                if not applies(name, sample.folder):
                    continue
                tally = tallies.setdefault((name, size, sample.folder), Tally())
                for _ in range(repeat):
                    started, cpu = time.perf_counter(), time.thread_time()
                    found = decode[name](frame)
                    tally.times.append((time.perf_counter() - started) * 1000)
                    tally.cpu.append((time.thread_time() - cpu) * 1000)
                tally.images += 1
                if sample.expected is None:
                    tally.wrong += bool(found)
                elif any(matches(f, sample.expected, binary=sample.binary) for f in found):
                    tally.read += 1
                elif found:
                    tally.wrong += 1
    return summarise(tallies, names)


def merged(parts: list[Tally]) -> Tally:
    out = Tally()
    for part in parts:
        out.times += part.times
        out.cpu += part.cpu
        out.read += part.read
        out.wrong += part.wrong
        out.images += part.images
    return out


def figures(tally: Tally, *, codes: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"images": tally.images,
                           "p50_ms": round(percentile(tally.times, 50), 2),
                           "p99_ms": round(percentile(tally.times, 99), 2),
                           "cpu_p50_ms": round(percentile(tally.cpu, 50), 2),
                           "cpu_p99_ms": round(percentile(tally.cpu, 99), 2)}
    if codes:
        out["read"] = tally.read
        out["rate"] = round(tally.read / tally.images, 4) if tally.images else None
        out["wrong"] = tally.wrong
    else:
        out["false_reads"] = tally.wrong
    return out


def summarise(tallies: dict[tuple[str, str, str], Tally], names: list[str]) -> dict[str, Any]:
    folders = sorted({folder for _, _, folder in tallies})
    out: dict[str, Any] = {}
    for name in names:
        for size in SIZES:
            mine = {folder: t for (n, s, folder), t in tallies.items() if n == name and s == size}
            if not mine:
                continue
            qr = [t for f, t in mine.items() if f.startswith("qr/")]
            ean = [t for f, t in mine.items() if f.split("/")[-1] in EAN_UPC]
            false = [t for f, t in mine.items() if f.endswith("falsepositives")]
            out[f"{name}/{size}"] = {
                "folders": {f: figures(mine[f], codes=not f.endswith("falsepositives"))
                            for f in folders if f in mine},
                "qr": figures(merged(qr), codes=True) if qr else None,
                "ean_upc": figures(merged(ean), codes=True) if ean else None,
                "falsepositives": figures(merged(false), codes=False) if false else None,
                "all": figures(merged(list(mine.values())), codes=False) | {"false_reads": None},
            }
    return out


def print_human(result: dict[str, Any]) -> None:
    for key, run in result["runs"].items():
        print(f"\n{key}")
        print(f"  {'folder':<26} {'read':>9} {'rate':>7} {'wrong':>6} {'p50 ms':>8} {'p99 ms':>8}"
              f" {'cpu p50':>8} {'cpu p99':>8}")
        rows = list(run["folders"].items()) + [
            (f"= {group}", run[group]) for group in ("qr", "ean_upc", "falsepositives")
            if run[group]] + [("= all images", run["all"])]
        for folder, fig in rows:
            if "rate" in fig:
                read = f"{fig['read']}/{fig['images']}"
                rate, wrong = f"{100 * fig['rate']:.1f}%", str(fig["wrong"])
            elif fig.get("false_reads") is not None:
                read, rate, wrong = f"-/{fig['images']}", "-", f"{fig['false_reads']} false"
            else:
                read, rate, wrong = f"{fig['images']}", "", ""
            print(f"  {folder:<26} {read:>9} {rate:>7} {wrong:>6} "
                  f"{fig['p50_ms']:>8.2f} {fig['p99_ms']:>8.2f} "
                  f"{fig['cpu_p50_ms']:>8.2f} {fig['cpu_p99_ms']:>8.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus",
                        help="the corpus: its qr/ and barcodes/ folders")
    parser.add_argument("--budget-ms", type=float, default=DEFAULT_BUDGET_MS,
                        help="the scanner decoder's time for second looks")
    parser.add_argument("--repeat", type=int, default=1, help="timed decodes per image")
    parser.add_argument("--no-route", action="store_true",
                        help="skip the routing half (bench/scan_route.py)")
    args = parser.parse_args(argv)
    if not (args.corpus / "qr").is_dir() or not (args.corpus / "barcodes").is_dir():
        parser.error(f"no qr/ and barcodes/ in {args.corpus}")
    started = time.monotonic()
    samples = load(args.corpus)
    print(f"{len(samples)} images from {args.corpus}; zxing-cpp {zxingcpp_version()}, "
          f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} OpenCV threads; "
          f"scanner second-look budget {args.budget_ms:g} ms")
    runs = measure(samples, args.budget_ms, args.repeat)
    result = {"bench": "scan", "corpus": str(args.corpus), "images": len(samples),
              "budget_ms": args.budget_ms, "repeat": args.repeat,
              "zxing_cpp": zxingcpp_version(), "opencv": cv2.__version__, "runs": runs}
    ours = runs["scanner/640x480"]
    result["targets"] = {
        "qr_rate_full": runs["scanner/full"]["qr"]["rate"],
        "ean_upc_rate_full": runs["scanner/full"]["ean_upc"]["rate"],
        "qr_rate_640": ours["qr"]["rate"], "ean_upc_rate_640": ours["ean_upc"]["rate"],
        "false_reads": ours["falsepositives"]["false_reads"]
        + runs["scanner/full"]["falsepositives"]["false_reads"],
        "wrong_reads": ours["qr"]["wrong"] + ours["ean_upc"]["wrong"]
        + runs["scanner/full"]["qr"]["wrong"] + runs["scanner/full"]["ean_upc"]["wrong"],
        "p50_ms_640": ours["all"]["p50_ms"], "p99_ms_640": ours["all"]["p99_ms"],
        "cpu_p50_ms_640": ours["all"]["cpu_p50_ms"], "cpu_p99_ms_640": ours["all"]["cpu_p99_ms"],
        "p50_ms_full": runs["scanner/full"]["all"]["p50_ms"],
        "p99_ms_full": runs["scanner/full"]["all"]["p99_ms"],
    }
    print_human(result)
    if not args.no_route:
        result["route"] = route()
    print(f"\n{time.monotonic() - started:.0f} s")
    print(json.dumps(result, separators=(",", ":")))
    return 0


def route() -> Any:
    """bench/scan_route.py's figures: its lines printed as they come, its JSON line kept."""
    import subprocess

    print("\nrouting: bench/scan_route.py", flush=True)
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("scan_route.py"))],
                          capture_output=True, text=True, check=False, timeout=1800)
    lines = proc.stdout.strip().splitlines()
    print("\n".join(lines[:-1]))
    if proc.returncode != 0 or not lines:
        print(proc.stderr[-2000:], file=sys.stderr)
        return {"error": f"bench/scan_route.py exited with {proc.returncode}"}
    return json.loads(lines[-1])


def zxingcpp_version() -> str:
    from importlib.metadata import version

    return version("zxing-cpp")


if __name__ == "__main__":
    sys.exit(main())
