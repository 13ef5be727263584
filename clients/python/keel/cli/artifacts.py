"""``keel artifacts upload|download|list|rm`` over a run (``--run-id``) or an artifact URI
(``--artifact-uri runs:/<run_id>/<path>``, ``file://...``, ``s3://...``)."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict

from keel.cli.output import emit

LIST_COLUMNS = ("path", "is_dir", "file_size", "sha256")


def register(sub: argparse._SubParsersAction) -> None:
    art = sub.add_parser("artifacts", help="upload, download, list and delete run artifacts")
    art_sub = art.add_subparsers(dest="artifacts_command", metavar="COMMAND")
    art_sub.required = True

    def target(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--run-id", help="the run whose artifacts to use")
        group.add_argument("--artifact-uri", help="runs:/<run_id>/<path>, or a file:// or s3:// URI under the server's root")

    p = art_sub.add_parser("upload", help="upload a local file or folder")
    p.add_argument("local_path", help="file or folder to upload")
    target(p)
    p.add_argument("--artifact-path", default=None, help="folder under the root to upload into (default: the root)")
    p.set_defaults(func=_upload)

    p = art_sub.add_parser("download", help="download a file or folder and print its local path")
    target(p)
    p.add_argument("--artifact-path", default="", help="file or folder under the root (default: everything)")
    p.add_argument("--dst-path", default=None, help="local folder to download into (default: a new temp folder)")
    p.set_defaults(func=_download)

    p = art_sub.add_parser("list", help="list a folder")
    target(p)
    p.add_argument("--artifact-path", default="", help="folder under the root (default: the root)")
    p.add_argument("--recursive", action="store_true", help="list every file below, not only direct children")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_list)

    p = art_sub.add_parser("rm", help="delete a file or a folder with everything under it")
    target(p)
    p.add_argument("--artifact-path", required=True, help="file or folder under the root to delete")
    p.set_defaults(func=_rm)


def _client():  # -> keel.Client (imported lazily: the CLI starts fast)
    import keel

    return keel.Client()


def _upload(args: argparse.Namespace) -> int:
    from keel.artifacts import _transfer

    client = _client()
    local = args.local_path
    if os.path.isdir(local):
        files = _transfer.upload_tree(client._artifact_transport, args.run_id, args.artifact_uri, local, args.artifact_path)
    else:
        name = os.path.basename(os.path.abspath(local))
        base = _transfer.clean_path(args.artifact_path)
        path = f"{base}/{name}" if base else name
        files = [_transfer.upload_file(client._artifact_transport, _transfer.ref(args.run_id, args.artifact_uri, path), local)]
    total = sum(f.file_size or 0 for f in files)
    print(f"uploaded {len(files)} file(s), {total} bytes")
    return 0


def _download(args: argparse.Namespace) -> int:
    from keel import artifacts

    print(
        artifacts.download_artifacts(
            artifact_uri=args.artifact_uri,
            run_id=args.run_id,
            artifact_path=args.artifact_path or None,
            dst_path=args.dst_path,
        )
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from keel.artifacts import _transfer

    client = _client()
    files = _transfer.list_all(
        client._artifact_transport, _transfer.ref(args.run_id, args.artifact_uri, args.artifact_path), recursive=args.recursive
    )
    emit([asdict(f) for f in files], LIST_COLUMNS, args.json)
    return 0


def _rm(args: argparse.Namespace) -> int:
    count = _client().delete_artifacts(args.artifact_path, run_id=args.run_id, artifact_uri=args.artifact_uri)
    print(f"deleted {count} file(s)")
    return 0
