"""`datacomp subset ...`: inspect, convert and combine uid subset files."""

from __future__ import annotations

import argparse

from datacomp.cli import add_json, add_output, add_parser, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(sub, "subset", "inspect, convert and combine uid subset files (sorted u8,u8 .npy)")
    ss = p.add_subparsers(dest="subset_cmd", metavar="ACTION", required=True)

    q = add_parser(ss, "info", "count, sortedness, duplicates, first and last uid of a subset file")
    q.add_argument("file", help="subset file (.npy or raw 16-byte records)")
    add_json(q, "the facts")
    q.set_defaults(func=_info)

    for name, doc in (("merge", "union"), ("intersect", "intersection"), ("diff", "first minus the others")):
        q = add_parser(ss, name, f"set {doc} of subset files (sorted, unique)")
        q.add_argument("files", nargs="+", help="input subset files (at least two)")
        add_output(q, required=True, help="subset file to write")
        q.add_argument("--raw", action="store_true", help="write raw 16-byte records instead of .npy")
        add_json(q, "the counts")
        q.set_defaults(func=_algebra, op=name)

    q = add_parser(ss, "from-parquet", "subset of the uids in a parquet column")
    q.add_argument("files", nargs="+", help="parquet files")
    q.add_argument("--column", default="uid", help="column holding 32-hex uids")
    add_output(q, required=True, help="subset file to write")
    q.add_argument("--raw", action="store_true", help="write raw 16-byte records instead of .npy")
    add_json(q, "the counts")
    q.set_defaults(func=_from_parquet)

    q = add_parser(ss, "from-text", "subset of a text file with one 32-hex uid per line")
    q.add_argument("file", help="text file, one 32-hex uid per line")
    add_output(q, required=True, help="subset file to write")
    q.add_argument("--raw", action="store_true", help="write raw 16-byte records instead of .npy")
    add_json(q, "the counts")
    q.set_defaults(func=_from_text)

    q = add_parser(ss, "to-text", "write a subset file's uids as 32-hex lines")
    q.add_argument("file", help="subset file to read")
    add_output(q, required=True, help="text file to write")
    add_json(q, "the counts")
    q.set_defaults(func=_to_text)

    q = add_parser(ss, "sort", "sort a subset file in place (keeps duplicates)")
    q.add_argument("file", help="subset file to sort (rewritten in its own format)")
    add_json(q, "the counts")
    q.set_defaults(func=_sort)


def _info(args: argparse.Namespace) -> int:
    from datacomp import uids as U

    arr = U.read_subset(args.file, validate=False)
    sorted_ = U.is_sorted(arr)
    if args.json:
        hx = U.uids_to_hex(arr[[0, -1]]) if arr.size else [None, None]
        print_json({"file": args.file, "uids": int(arr.size), "sorted": bool(sorted_),
                    "duplicates": int(U.count_duplicates(arr)) if sorted_ else None, "first": hx[0], "last": hx[1]})
        return 0
    print(f"file:       {args.file}")
    print(f"uids:       {arr.size:,}")
    print(f"sorted:     {'yes' if sorted_ else 'NO (fix: datacomp subset sort FILE)'}")
    if sorted_:
        dups = U.count_duplicates(arr)
        note = " (each repeat is written that many times by reshard)" if dups else ""
        print(f"duplicates: {dups:,}{note}")
    if arr.size:
        hx = U.uids_to_hex(arr[[0, -1]])
        print(f"first uid:  {hx[0]}")
        print(f"last uid:   {hx[1]}")
    return 0


def _algebra(args: argparse.Namespace) -> int:
    from datacomp import uids as U
    from datacomp.errors import DataCompError

    if len(args.files) < 2:
        raise DataCompError(f"subset {args.op} needs at least two input files")
    arrays = [U.read_subset(f) for f in args.files]
    op = {"merge": U.union, "intersect": U.intersect, "diff": U.difference}[args.op]
    out = op(*arrays)
    U.write_subset(args.output, out, raw=args.raw, sort=False)
    if args.json:
        print_json({"op": args.op, "inputs": [int(a.size) for a in arrays], "uids": int(out.size),
                    "output": args.output})
        return 0
    sizes = ", ".join(f"{a.size:,}" for a in arrays)
    print(f"{args.op}: inputs {sizes} -> {out.size:,} uids written to {args.output}")
    return 0


def _from_parquet(args: argparse.Namespace) -> int:
    from datacomp import uids as U

    arr = U.uids_from_parquet([str(f) for f in args.files], column=args.column)
    U.write_subset(args.output, arr, raw=args.raw)
    if args.json:
        print_json({"uids": int(arr.size), "output": args.output})
        return 0
    print(f"{arr.size:,} uids from {len(args.files)} parquet file(s) written to {args.output}")
    return 0


def _from_text(args: argparse.Namespace) -> int:
    from datacomp import uids as U

    arr = U.uids_from_text(args.file)
    U.write_subset(args.output, arr, raw=args.raw)
    if args.json:
        print_json({"uids": int(arr.size), "output": args.output})
        return 0
    print(f"{arr.size:,} uids written to {args.output}")
    return 0


def _to_text(args: argparse.Namespace) -> int:
    from datacomp import uids as U
    from datacomp.io import atomic_path

    arr = U.read_subset(args.file)
    with atomic_path(args.output) as tmp:
        tmp.write_text("".join(h + "\n" for h in U.uids_to_hex(arr)))
    if args.json:
        print_json({"uids": int(arr.size), "output": args.output})
        return 0
    print(f"{arr.size:,} uids written to {args.output}")
    return 0


def _sort(args: argparse.Namespace) -> int:
    from datacomp import uids as U

    arr = U.read_subset(args.file, validate=False)
    from datacomp.storage import as_location

    with as_location(args.file).open("rb") as f:
        raw = f.read(6) != U.NPY_MAGIC
    U.write_subset(args.file, arr, raw=raw)
    if args.json:
        print_json({"uids": int(arr.size), "output": args.file})
        return 0
    print(f"sorted {arr.size:,} uids in {args.file}")
    return 0
