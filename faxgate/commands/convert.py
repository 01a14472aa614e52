"""``faxgate convert``: documents → one multi-page TIFF Class F file.

The same rendering faxd does before dialling, for checking what a recipient
will get and for producing fax files by hand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from faxgate.commands import pageopts


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "convert",
        help="render documents to a TIFF Class F fax file",
        description="Render PDF, images, text and Office documents to fax pages "
        "and write them as one multi-page TIFF Class F file.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="documents, in page order")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.tif", help="TIFF to write")
    pageopts.add_arguments(parser, "our fax number in the header (default: fax.station_id)")
    parser.add_argument("--coding", choices=("mh", "mr", "mmr"))
    parser.add_argument("--sender", default="", help="sender shown in the header and cover")
    parser.add_argument("--charset", help="charset of text inputs (default: detected)")
    parser.add_argument(
        "--keep-blank-pages", action="store_true", help="keep blank pages at document ends"
    )
    parser.add_argument("--max-pages", type=int, help="page limit (default: limits.max_pages)")
    cover = parser.add_argument_group("cover page")
    cover.add_argument("--cover", action="store_true", help="put a cover page first")
    cover.add_argument("--to", default="", metavar="NAME1", help="recipient name on the cover")
    cover.add_argument("--attn", default="", metavar="NAME2", help="second name on the cover")
    cover.add_argument("--comment", default="", help="comment text on the cover")
    cover.add_argument(
        "--comment-file", metavar="FILE", help="read the cover comment from FILE (UTF-8)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from faxgate import config
    from faxgate.errors import InputError
    from faxgate.faxd.tifff import write_tiff_f
    from faxgate.render import CoverInfo, Document, RenderOptions, render_with_sources

    cfg = config.load(args.config)
    documents = [Document(_read(path), Path(path).name, args.charset) for path in args.inputs]
    cfg = pageopts.apply(
        cfg,
        args,
        cover_page=args.cover,
        drop_blank_pages=cfg.render.drop_blank_pages and not args.keep_blank_pages,
    )
    comment = args.comment
    if args.comment_file:
        comment = _read(args.comment_file).decode("utf-8", errors="replace")
    cover = CoverInfo(
        name1=args.to,
        name2=args.attn,
        sender=args.sender,
        station_id=cfg.fax.station_id,
        comment=comment,
    )
    overrides = {} if args.max_pages is None else {"max_pages": args.max_pages}
    options = RenderOptions.from_config(cfg, sender=args.sender, cover=cover, **overrides)
    labelled = render_with_sources(documents, options)
    coding = args.coding or cfg.render.coding
    output = Path(args.output)
    try:
        write_tiff_f(output, [page for _, page in labelled], coding)
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror or exc}") from None
    sizes = _strip_sizes(output)
    for number, ((source, page), size) in enumerate(zip(labelled, sizes, strict=True), start=1):
        width, height = page.image.size
        print(
            f"page {number}/{len(labelled)}  {source}  {page.resolution}  "
            f"{width}x{height}  {coding}  {size} bytes"
        )
    return 0


def _read(path: str) -> bytes:
    from faxgate.errors import InputError

    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _strip_sizes(path: Path) -> list[int]:
    """Encoded bytes of each page, from the TIFF's StripByteCounts tags."""
    from PIL import Image, ImageSequence

    with Image.open(path) as tiff:
        return [sum(frame.tag_v2[279]) for frame in ImageSequence.Iterator(tiff)]
