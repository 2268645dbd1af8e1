"""The ``hypoxnode`` command: ``serve``, ``quantify``, ``route-test``, ``suv`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from quant.errors import QuantificationError
from service.config import Config, ConfigError, load_config
from service.runtime.logs import configure_logging

log = logging.getLogger("hypoxnode")

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_NOT_QUANTIFIABLE = 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hypoxnode`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    # Commands with their own argument parsers get everything after their name.
    if argv and argv[0] == "suv":
        from service.cli.suv_command import run_suv

        return run_suv(argv[1:])
    if argv and argv[0] == "repeatability":
        from service.cli.repeatability_command import run_repeatability

        return run_repeatability(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"hypoxnode: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command in ("status", "reprocess", "send"):
        from service.cli.operator_client import run_operator

        return run_operator(args.command, config, getattr(args, "study_uid", None),
                            getattr(args, "destination", None), getattr(args, "json", False))
    handler = {"serve": _serve, "quantify": _quantify, "demo": _demo,
               "route-test": _route_test}[args.command]
    return int(handler(args, config))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hypoxnode",
        description="DICOM node for hypoxia PET/CT quantification (64Cu-ATSM, FMISO, FAZA, FDG).",
    )
    sub = parser.add_subparsers(dest="command")
    config_help = "TOML configuration file (default: $HYPOXNODE_CONFIG, else built-in defaults)"

    serve = sub.add_parser("serve", help="run the DICOM node until SIGTERM/SIGINT")
    serve.add_argument("--config", type=Path, help=config_help)

    quantify = sub.add_parser("quantify", help="quantify the PET/CT study under a folder, offline")
    quantify.add_argument("directory", type=Path)
    quantify.add_argument("--json", action="store_true", help="print the figures as JSON")
    quantify.add_argument("--config", type=Path, help=config_help)
    quantify.add_argument(
        "--output-dir", type=Path, help="also write the SEG, SR and summary objects here"
    )

    route = sub.add_parser("route-test",
                           help="what the routing rules would do with the studies under a folder")
    route.add_argument("directory", type=Path)
    route.add_argument("--config", type=Path, help=config_help)
    route.add_argument("--calling-ae", default="",
                       help="calling AE title to assume (default: none)")
    route.add_argument("--called-ae", default=None,
                       help="called AE title to assume (default: [node] ae_title)")
    route.add_argument("--json", action="store_true", help="print the decisions as JSON")

    suv = sub.add_parser("suv", help="SUV conversion of one PET series (see `hypoxnode suv -h`)",
                         add_help=False)
    suv.add_argument("rest", nargs=argparse.REMAINDER)

    status = sub.add_parser("status", help="state of the running node and its recent studies")
    status.add_argument("--json", action="store_true")
    status.add_argument("--config", type=Path, help=config_help)
    reprocess = sub.add_parser("reprocess", help="quantify a study again (running node)")
    reprocess.add_argument("study_uid")
    reprocess.add_argument("--config", type=Path, help=config_help)
    send = sub.add_parser("send", help="send a study's results to a destination again")
    send.add_argument("study_uid")
    send.add_argument("destination", nargs="?", help="destination name (default: all)")
    send.add_argument("--config", type=Path, help=config_help)

    repeat = sub.add_parser(
        "repeatability", add_help=False,
        help="test-retest statistics (wSD, wCV, RC, ICC, Bland-Altman) over paired figures",
    )
    repeat.add_argument("rest", nargs=argparse.REMAINDER)

    demo = sub.add_parser("demo", help="a node on loopback, a synthetic 64Cu-ATSM study, figures")
    demo.add_argument("--config", type=Path, help=config_help)
    return parser


def _serve(args: argparse.Namespace, config: Config) -> int:
    from service.node import Node

    configure_logging(config.log.level, config.log.json_lines)
    node = Node(config)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        node.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        node.stop()
        return EXIT_USAGE
    stop.wait()
    node.stop()
    return EXIT_OK


def _quantify(args: argparse.Namespace, config: Config) -> int:
    from quant.pipeline import quantify
    from service.pipeline.processing import build_result_objects, write_result_objects
    from service.report.report_text import format_table
    from service.storage.study_files import find_files, read_study

    configure_logging("WARNING")
    if not args.directory.is_dir():
        return _refuse(args.json, f"not a folder: {args.directory}")
    try:
        files = read_study(find_files(args.directory))
        quantified = quantify(files.pet, files.ct, files.structures, config.quant.to_settings())
    except QuantificationError as exc:
        return _refuse(args.json, str(exc))
    quantified.result.warnings.extend(files.notes)
    output = quantified.result.to_json()
    if args.output_dir is not None:
        objects = build_result_objects(quantified, config, generation=1)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        folder: Path = args.output_dir

        def write(data: bytes, kind: str, uid: str) -> Path:
            path = folder / f"{kind}-{uid}.dcm"
            path.write_bytes(data)
            return path

        output["outputs"] = [path for _, _, path in write_result_objects(objects, write)]
    if args.json:
        print(json.dumps(output, indent=2))
    else:
        print(format_table(output))
    return EXIT_OK


def _route_test(args: argparse.Namespace, config: Config) -> int:
    from service.routing.rules import evaluate, headers_from_files
    from service.storage.study_files import find_files

    configure_logging("WARNING")
    if not args.directory.is_dir():
        print(f"hypoxnode: not a folder: {args.directory}", file=sys.stderr)
        return EXIT_USAGE
    called = config.node.ae_title if args.called_ae is None else args.called_ae
    studies = headers_from_files(find_files(args.directory), args.calling_ae, called)
    out = []
    for study in studies:
        decision = evaluate(config.routing, study)
        out.append({"study_instance_uid": study.study_instance_uid,
                    "series": [f"{s.modality} {s.series_description!r} ({s.instances})"
                               for s in study.series], **decision.to_json()})
    if args.json:
        print(json.dumps(out, indent=2))
        return EXIT_OK
    if not out:
        print(f"no DICOM study under {args.directory}")
    for entry in out:
        forward = f", forward to {', '.join(entry['forward_to'])}" if entry["forward_to"] else ""
        profile = f" with profile {entry['profile']}" if entry["profile"] else ""
        print(f"study {entry['study_instance_uid']}: {'; '.join(entry['series'])}\n"
              f"  rule {entry['rule']!r}: {entry['action']}{profile}{forward}\n"
              f"  because {entry['why']}")
    return EXIT_OK


def _refuse(as_json: bool, reason: str) -> int:
    payload: dict[str, Any] = {"error": reason}
    if as_json:
        print(json.dumps(payload))
    else:
        print(f"hypoxnode: cannot quantify: {reason}", file=sys.stderr)
    return EXIT_NOT_QUANTIFIABLE


def _demo(args: argparse.Namespace, config: Config) -> int:
    from service.cli.demo import run_demo

    return run_demo(config)


if __name__ == "__main__":
    raise SystemExit(main())
