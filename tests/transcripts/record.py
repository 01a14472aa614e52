"""Record T.30 transcripts from real calls over the simulated line.

Run from the repository root: ``.venv/bin/python tests/transcripts/record.py``.
Each scenario becomes ``<name>.json``: the call's setup, every action the
machine took and every event the modem reported (with its time), and the
result. ``tests/test_t30_replay.py`` feeds the events back into a fresh
``T30Sender`` and checks it takes the same actions to the same result.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from faxgate.faxd.page import FaxPage
from faxgate.faxd.sender import ImagePages, SendOptions, send_fax
from faxgate.simline import LineOptions, SimulatedLine

HERE = Path(__file__).parent
PACING = 40.0

SCENARIOS = {
    "v17_fine_two_pages": ({}, 2, "fine", {}),
    "v27ter_only": ({"max_rate": 4800}, 1, "standard", {}),
    "standard_only_far_end": ({"resolutions": ("standard",)}, 1, "fine", {"coding": "mh"}),
    "hangup_after_page_1_of_3": ({"hangup_after_page": 1}, 3, "standard", {}),
    "busy": ({"behaviour": "busy"}, 1, "standard", {}),
    "noisy_line_ftt_fallback": ({"noise_dbm0": -46.0}, 2, "fine", {}),
}


def page(seed: int, resolution: str) -> FaxPage:
    rows = 600 if resolution == "fine" else 300
    image = Image.new("1", (1728, rows), 1)
    draw = ImageDraw.Draw(image)
    for y in range(10, rows - 20, 40):
        draw.text((100 + seed * 10, y), f"transcript page {seed} row {y}", fill=0)
    return FaxPage(image, resolution)


def record(name: str, workdir: Path) -> dict:
    line_options, count, resolution, overrides = SCENARIOS[name]
    device = workdir / f"tty{name}"
    with SimulatedLine(device, workdir / "out", LineOptions(pacing=PACING, **line_options)):
        options = SendOptions(
            lock_dir=None, station_id="+86 755 5550100", time_scale=PACING / 4, **overrides
        )
        pages = ImagePages([page(i, resolution) for i in range(count)])
        exchange: list[dict] = []
        result = send_fax(str(device), "5550199", pages, options, record=exchange)
    return {
        "scenario": name,
        "number": "5550199",
        "pages": count,
        "resolution": resolution,
        "first_page": 0,
        "options": dataclasses.asdict(options.sender_options()),
        "exchange": exchange,
        "result": {
            "ok": result.ok,
            "reason": result.reason,
            "confirmed_pages": result.confirmed_pages,
            "bit_rate": result.bit_rate,
            "resolution": result.resolution,
            "coding": result.coding,
            "remote_ident": result.remote_ident,
        },
    }


def main(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or list(SCENARIOS):
            data = record(name, Path(tmp))
            path = HERE / f"{name}.json"
            path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
            print(f"{path}: {data['result']}")


if __name__ == "__main__":
    main(sys.argv[1:])
