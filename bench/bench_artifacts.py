"""Artifact benchmark: keel's ArtifactService vs the floors (``cp``, direct minio SDK put/get),
vs MLflow's artifact proxy (the anchor) and vs a bare Python gRPC stream (the transport alone, a
reference), on the same 256 MiB and 1 GiB files, in one run.

Run with ``make bench-artifacts`` (or ``.venv/bin/python bench/bench_artifacts.py [--quick]``).
Everything is on loopback: a private SeaweedFS S3 server (auth on), ``keel server`` processes
(local folder and S3 store), and ``mlflow server --artifacts-destination`` (folder and S3) from
bench/.venv-mlflow, all up at once. Each file goes ``--rounds`` times (3) through every system,
the systems taking turns, and the median time is reported (after one warm-up of the small file);
MB/s = 10^6 bytes per second. Server peak RSS growth is read from /proc (VmHWM - VmRSS before, the peak reset first).
Results are printed and written to this script's section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "artifacts")]

from art_helpers import ACCESS_KEY, SECRET_KEY, make_run, private_seaweedfs  # noqa: E402
from server_fixtures import server_process  # noqa: E402

import keel  # noqa: E402
from keel_server.artifacts.stores.s3 import PART_BYTES  # noqa: E402
from keel_server.common import db as dbmod  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
# Row order of the report.
ORDER = ["cp (floor)", "minio SDK direct (floor)", "raw gRPC stream (reference)", "keel", "MLflow proxy (anchor)"]
RAW = "raw gRPC stream (reference)"
SECTION = "## Artifacts (bench/bench_artifacts.py)"
MLFLOW = ROOT / "bench" / ".venv-mlflow" / "bin"
MiB = 1024 * 1024


def make_file(path: Path, size: int) -> str:
    """Random-looking content written 1 MiB at a time; returns its sha256."""
    digest = hashlib.sha256()
    base = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            block = i.to_bytes(8, "little") + base[8:]
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def rss(pid: int, reset_peak: bool = False) -> tuple[int, int]:
    """(current, peak) RSS in bytes of a server and its child processes (MLflow's workers).
    ``reset_peak`` restarts the peak from the current RSS (Linux ``clear_refs``) so the next
    reading's peak belongs to what happened in between, not to an earlier, bigger transfer."""
    current = peak = 0
    for p in [pid, *_descendants(pid)]:
        try:
            if reset_peak:
                Path(f"/proc/{p}/clear_refs").write_text("5")
            text = Path(f"/proc/{p}/status").read_text()
        except FileNotFoundError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        current += int(fields["VmRSS"].split()[0]) * 1024
        peak += int(fields["VmHWM"].split()[0]) * 1024
    return current, peak


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def drop_file(path: str | Path) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)


# ---------------------------------------------------------------- the contenders
def bench_cp(src: Path, work: Path) -> tuple[float, float]:
    dst = work / "cp-copy.bin"
    up = timed(lambda: subprocess.run(["cp", str(src), str(dst)], check=True))
    back = work / "cp-back.bin"
    down = timed(lambda: subprocess.run(["cp", str(dst), str(back)], check=True))
    drop_file(dst), drop_file(back)
    return up, down


def bench_minio(src: Path, work: Path, endpoint: str, bucket: str) -> tuple[float, float]:
    from minio import Minio

    client = Minio(endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    key = f"direct/{uuid.uuid4().hex}"
    # keel's server's part size.
    up = timed(lambda: client.fput_object(bucket, key, str(src), part_size=PART_BYTES))
    back = work / "minio-back.bin"
    down = timed(lambda: client.fget_object(bucket, key, str(back)))
    drop_file(back)
    client.remove_object(bucket, key)
    return up, down


@contextmanager
def keel_server(work: Path, artifact_uri: str, env: dict[str, str]) -> Iterator[tuple[str, int, str]]:
    db_url = f"sqlite:///{work}/keel-{uuid.uuid4().hex[:6]}.db"
    args = ["--services", "artifacts", "--db-url", db_url, "--artifact-uri", artifact_uri, "--log-level", "WARNING"]
    with server_process(args, env=env) as server:
        assert server.process is not None
        dbmod.initialize(db_url)
        root = artifact_uri if artifact_uri.startswith("s3://") else "file://" + os.path.abspath(artifact_uri[7:])
        yield server.uri, server.process.pid, make_run(root)


def bench_keel(uri: str, pid: int, run_id: str, src: Path, work: Path, sha: str) -> tuple[float, float, int]:
    client = keel.Client(uri)
    before, _ = rss(pid, reset_peak=True)
    name = f"k-{uuid.uuid4().hex[:6]}"
    up = timed(lambda: client.log_artifact(run_id, str(src), name))
    dst = work / "keel-dl"
    down = timed(lambda: client.download_artifacts(run_id, f"{name}/{src.name}", str(dst)))
    assert sha256_of(dst / src.name) == sha, "keel download differs"
    drop_file(dst)
    client.delete_artifacts(name, run_id=run_id)
    _, peak = rss(pid)
    return up, down, peak - before


# The transport alone: a bare grpcio server (its own process, like keel's) that writes what a
# client stream sends to a file and streams a file back, in the same 1 MiB messages as keel, with
# no protobuf, no checksum, no fsync and no metadata. keel's distance to it is keel's own work.
RAW_PUT, RAW_GET = "/bench.Raw/Put", "/bench.Raw/Get"


def serve_raw_grpc(folder: str) -> None:
    from concurrent import futures

    import grpc

    def put(chunks: Iterator[bytes], context: object) -> bytes:
        with open(os.path.join(folder, "raw-put.bin"), "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        return b""

    def get(path: bytes, context: object) -> Iterator[bytes]:
        with open(path, "rb") as f:
            while block := f.read(MiB):
                yield block

    server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_receive_message_length", 8 * MiB)])
    handlers = {"Put": grpc.stream_unary_rpc_method_handler(put), "Get": grpc.unary_stream_rpc_method_handler(get)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Raw", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


@contextmanager
def raw_grpc_server(work: Path) -> Iterator[str]:
    process = subprocess.Popen([sys.executable, __file__, "--serve-raw-grpc", str(work)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield f"127.0.0.1:{int(process.stdout.readline())}"
    finally:
        process.terminate()
        process.wait(timeout=15)


def bench_raw_grpc(address: str, src: Path, work: Path) -> tuple[float, float]:
    import grpc

    with grpc.insecure_channel(address) as channel:
        put = channel.stream_unary(RAW_PUT)
        get = channel.unary_stream(RAW_GET)

        def send() -> None:
            with open(src, "rb") as f:
                put(iter(lambda: f.read(MiB), b""))

        def receive() -> None:
            with open(work / "raw-back.bin", "wb") as out:
                for chunk in get(str(work / "raw-put.bin").encode()):
                    out.write(chunk)

        up, down = timed(send), timed(receive)
    drop_file(work / "raw-put.bin"), drop_file(work / "raw-back.bin")
    return up, down


@contextmanager
def mlflow_server(work: Path, destination: str, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [str(MLFLOW / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{work}/mlflow-{uuid.uuid4().hex[:6]}.db",
         "--artifacts-destination", destination],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env}, cwd=work,
    )  # fmt: skip
    try:
        import urllib.request

        deadline = time.monotonic() + 120
        while True:  # readiness check: /health answers
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                assert process.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


MLFLOW_CLIENT = textwrap.dedent(
    """
    import sys, time, mlflow
    uri, src, dst = sys.argv[1:4]
    mlflow.set_tracking_uri(uri)
    run = mlflow.start_run()
    t = time.perf_counter(); mlflow.log_artifact(src, "data"); up = time.perf_counter() - t
    mlflow.end_run()
    name = src.rsplit("/", 1)[-1]
    t = time.perf_counter()
    mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="data/" + name, dst_path=dst)
    down = time.perf_counter() - t
    print(up, down)
    """
)


def bench_mlflow(uri: str, pid: int, src: Path, work: Path, sha: str) -> tuple[float, float, int]:
    before, _ = rss(pid, reset_peak=True)
    dst = work / "mlflow-dl"
    out = subprocess.run(
        [str(MLFLOW / "python"), "-c", MLFLOW_CLIENT, uri, str(src), str(dst)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"the MLflow client failed against {uri}:\n{out.stderr[-3000:]}")
    up, down = map(float, out.stdout.split()[-2:])
    assert sha256_of(dst / src.name) == sha, "mlflow download differs"
    drop_file(dst)
    _, peak = rss(pid)
    return up, down, peak - before


# ---------------------------------------------------------------- the run
def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    return f"{os.cpu_count()} CPUs ({cpu}), {mem} GiB RAM, {platform.system()} {platform.release()}, {dt.date.today()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 MiB and 64 MiB instead of 256 MiB and 1 GiB")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow anchor")
    parser.add_argument("--rounds", type=int, default=3, help="transfers of each file by each system (median reported)")
    parser.add_argument("--serve-raw-grpc", metavar="DIR", help=argparse.SUPPRESS)  # the raw gRPC server's process
    args = parser.parse_args()
    if args.serve_raw_grpc:
        return serve_raw_grpc(args.serve_raw_grpc)
    sizes = [32 * MiB, 64 * MiB] if args.quick else [256 * MiB, 1024 * MiB]
    with tempfile.TemporaryDirectory(prefix="keel-bench-art-", dir=os.environ.get("KEEL_BENCH_TMP")) as tmp, ExitStack() as servers:
        work = Path(tmp)
        files = {}
        for size in sizes:
            path = work / f"data-{size // MiB}MiB.bin"
            files[size] = (path, make_file(path, size))
        warm = work / "warm.bin"
        make_file(warm, 4 * MiB)
        endpoint = servers.enter_context(private_seaweedfs(work / "weed")).endpoint
        s3_env = {"KEEL_S3_ENDPOINT_URL": f"http://{endpoint}", "KEEL_S3_ACCESS_KEY": ACCESS_KEY, "KEEL_S3_SECRET_KEY": SECRET_KEY}
        aws_env = {"MLFLOW_S3_ENDPOINT_URL": f"http://{endpoint}", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                   "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
        # Every contender is up before the first transfer, so the rounds can take turns.
        Transfer = Callable[[Path, str], tuple[float, float, int]]
        contenders: list[tuple[str, str, Transfer]] = [
            ("local", "cp (floor)", lambda path, sha: (*bench_cp(path, work), 0)),
            ("s3", "minio SDK direct (floor)", lambda path, sha: (*bench_minio(path, work, endpoint, "bench-direct"), 0)),
        ]
        raw = servers.enter_context(raw_grpc_server(work))
        contenders.append(("local", RAW, lambda path, sha: (*bench_raw_grpc(raw, path, work), 0)))
        for store, artifact_uri, env in (("local", f"file://{work}/keel-store", {}), ("s3", "s3://bench-keel/artifacts", s3_env)):
            uri, pid, run_id = servers.enter_context(keel_server(work, artifact_uri, env))
            bench_keel(uri, pid, run_id, warm, work, sha256_of(warm))
            contenders.append((store, "keel", lambda path, sha, uri=uri, pid=pid, run_id=run_id: bench_keel(uri, pid, run_id, path, work, sha)))
        if not args.no_mlflow and (MLFLOW / "mlflow").exists():
            from minio import Minio

            Minio(endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False).make_bucket("bench-mlflow")
            for store, destination, env in (("local", str(work / "mlflow-store"), {}), ("s3", "s3://bench-mlflow/artifacts", aws_env)):
                uri, pid = servers.enter_context(mlflow_server(work, destination, env))
                contenders.append((store, "MLflow proxy (anchor)", lambda path, sha, uri=uri, pid=pid: bench_mlflow(uri, pid, path, work, sha)))
        samples: dict[tuple[str, str, int], list[tuple[float, float, int]]] = {}
        for size, (path, sha) in files.items():
            for r in range(args.rounds):
                turn = r % len(contenders)
                for store, system, transfer in contenders[turn:] + contenders[:turn]:
                    # Untimed: each transfer starts with none of the previous one's dirty pages
                    # still to be written back.
                    os.sync()
                    samples.setdefault((store, system, size), []).append(transfer(path, sha))
        rows = []
        for (store, system, size), runs in sorted(samples.items(), key=lambda kv: (ORDER.index(kv[0][1]), kv[0][0] != "local", kv[0][2])):
            grew = max(run[2] for run in runs)
            rows.append((store, system, size, statistics.median(run[0] for run in runs),
                         statistics.median(run[1] for run in runs), f"{grew / MiB:.0f} MiB" if system in ("keel", "MLflow proxy (anchor)") else ""))  # fmt: skip
    report(rows, sizes, args.rounds)


def report(rows: list[tuple[str, str, int, float, float, str]], sizes: list[int], rounds: int) -> None:
    def mbps(size: int, seconds: float) -> float:
        return size / seconds / 1e6

    lines = [SECTION, "", f"Machine: {machine()}", "",
             f"Each file went {rounds} times through every system, the systems taking turns in a rotating order, "
             "with a `sync` (untimed) before each transfer; MB/s are of the median time, RSS growth the largest seen.", "",
             "| store | system | file | upload MB/s | download MB/s | server peak RSS growth |",
             "| --- | --- | --- | ---: | ---: | ---: |"]  # fmt: skip
    for store, system, size, up, down, grew in rows:
        lines.append(f"| {store} | {system} | {size // MiB} MiB | {mbps(size, up):.0f} | {mbps(size, down):.0f} | {grew} |")
    lines += ["", "Ratios (keel / floor, keel / MLflow proxy, keel / the raw gRPC stream), each way:", ""]
    index = {(r[0], r[1], r[2]): r for r in rows}
    for store, floor in (("local", "cp (floor)"), ("s3", "minio SDK direct (floor)")):
        for size in sizes:
            k = index.get((store, "keel", size))
            f = index.get((store, floor, size))
            m = index.get((store, "MLflow proxy (anchor)", size))
            if not k or not f:
                continue
            text = f"- {store}, {size // MiB} MiB: vs floor up {f[3] / k[3]:.0%}, down {f[4] / k[4]:.0%}"
            if m:
                text += f"; vs MLflow up {m[3] / k[3]:.1f}x, down {m[4] / k[4]:.1f}x"
            raw = index.get((store, RAW, size))
            if raw:
                text += f"; vs the raw gRPC stream up {raw[3] / k[3]:.0%}, down {raw[4] / k[4]:.0%}"
            lines.append(text)
    text = "\n".join(lines) + "\n"
    print(text)
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
    updated = pattern.sub(lambda _: text + "\n", existing) if pattern.search(existing) else existing.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(updated)


if __name__ == "__main__":
    main()
