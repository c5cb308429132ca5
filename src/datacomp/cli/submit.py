"""`datacomp submit`: package results + subset(s) (+ checkpoint) in the submission layout; upload if asked."""

from __future__ import annotations

import argparse

from datacomp.cli import add_json, add_output, add_parser, flag, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub, "submit", "package a submission (<scale>_scale/results.jsonl, samples/, manifest) and optionally upload",
        description="Writes <out>/<scale>_scale/{results.jsonl,samples/<subset>,checkpoint.pt} and "
        "<out>/manifest.json (sha256 of every file). Uploads to a Hugging Face model repo only with "
        "--hf-repo, using the token of `huggingface-cli login`; nothing else is contacted.",
    )
    p.add_argument("--scale", required=True, help="scale the model was trained at")
    p.add_argument("--results", help="eval_results.jsonl to submit (not needed with --verify)")
    p.add_argument("--samples", nargs="+", default=[], metavar="SUBSET", help="subset file(s) trained on")
    p.add_argument("--checkpoint", default=None, help="include this checkpoint as checkpoint.pt")
    add_output(p, "--out", "--output-dir", "--output_dir", default="submission", help="package directory")
    flag(p, "--method-name", hidden=("--method_name",), default="", help="name of the filtering method")
    p.add_argument("--author", default="", help="author(s) recorded in the manifest")
    p.add_argument("--email", default="", help="contact e-mail recorded in the manifest")
    p.add_argument("--track", choices=["filtering", "byod"], default="filtering", help="the competition track")
    p.add_argument("--writeup", default="", help="link to a description of the method")
    flag(p, "--dataset-size", hidden=("--dataset_size",), type=int, default=None, help="defaults to the subset size")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package in --output")
    p.add_argument("--verify", action="store_true", help="only re-check an existing package's hashes")
    p.add_argument("--hf-repo", default=None, metavar="USER/REPO",
                   help="upload the package to this existing Hugging Face model repo")
    add_json(p, "the verified manifest")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datacomp.errors import DataCompError
    from datacomp.report import SubmissionInfo, package_submission, upload_submission, verify_submission

    if not args.verify:
        if not args.results or not args.samples:
            raise DataCompError("submit needs --results EVAL_RESULTS.jsonl and --samples SUBSET.npy")
        info = SubmissionInfo(args.method_name, args.author, args.email, args.track, args.writeup,
                              args.dataset_size)
        package_submission(args.output, args.scale, args.results, args.samples, args.checkpoint, info,
                           overwrite=args.overwrite)
    manifest = verify_submission(args.output)
    if manifest["scale"] != args.scale:
        raise DataCompError(f"{args.output}: package is for scale {manifest['scale']!r}, not {args.scale!r}")
    if not args.json:  # before the upload, which may fail
        print(f"{args.output}: {len(manifest['files'])} file(s), hashes verified", flush=True)
    uploaded = upload_submission(args.output, args.hf_repo) if args.hf_repo else None
    if args.json:
        print_json({"output": args.output, "manifest": manifest, "uploaded": uploaded})
    elif uploaded:
        print(f"uploaded: {uploaded}")
    return 0
