"""Page options shared by ``convert`` and ``send``: the same flags, laid over
the configuration the same way, so a page looks alike from either command."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faxgate.config import Config


def add_arguments(parser: argparse.ArgumentParser, station_id_help: str) -> None:
    """``--resolution``, ``--paper``, ``--header/--no-header`` and ``--station-id``."""
    parser.add_argument("--resolution", choices=("standard", "fine", "superfine"))
    parser.add_argument("--paper", choices=("a4", "letter"))
    parser.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stamp the header line on each page (default: render.header)",
    )
    parser.add_argument("--station-id", help=station_id_help)


def apply(cfg: Config, args: argparse.Namespace, **render: Any) -> Config:
    """``cfg`` with the page options given on the command line (and any further
    ``[render]`` values in ``render``) in place of the configured ones."""
    station_id = cfg.fax.station_id if args.station_id is None else args.station_id
    return dataclasses.replace(
        cfg,
        fax=dataclasses.replace(cfg.fax, station_id=station_id),
        render=dataclasses.replace(
            cfg.render,
            resolution=args.resolution or cfg.render.resolution,
            paper=args.paper or cfg.render.paper,
            header=cfg.render.header if args.header is None else args.header,
            **render,
        ),
    )
