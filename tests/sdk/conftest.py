"""Session fixtures for the SDK end-to-end tests.

One tansu broker (in-memory storage) and one collector (the real binary) per test session, each on a
free loopback port, with a topic prefix no other session shares. Everything is polled for
readiness (no fixed sleeps) and stopped at the end of the session.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENTS_DIR = REPO_ROOT / "tests" / "clients"
SOURCE_ID = "sdk"
WRITE_KEY = "test-key"

STARTUP_TIMEOUT_S = 60.0
CONSUME_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None,
               log: Path | None = None, interval: float = 0.1) -> None:
    """Polls `check` until it is true; fails early when `proc` died, naming its log."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}\n{tail(log)}")
        try:
            if check():
                return
        except Exception:  # not up yet; the condition is retried until the deadline
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not true after {timeout:.0f}s\n{tail(log)}")
        time.sleep(interval)


def tail(log: Path | None, lines: int = 40) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()
    return f"--- last lines of {log} ---\n" + "\n".join(text[-lines:])


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the collector flushes its producer on it), then SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --------------------------------------------------------------------------------------------- broker

@dataclass
class Broker:
    bootstrap: str
    log: Path


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> Iterator[Broker]:
    tansu = os.environ.get("CDP_TANSU_BIN") or shutil.which("tansu")
    if not tansu:
        pytest.fail("tansu is not on PATH (cargo install tansu, or set CDP_TANSU_BIN)")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    bootstrap = f"127.0.0.1:{port}"
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        wait_until("tansu answers metadata requests",
                   lambda: admin.list_topics(timeout=1) is not None,
                   STARTUP_TIMEOUT_S, proc, log)
        yield Broker(bootstrap, log)
    finally:
        stop(proc)


# ------------------------------------------------------------------------------------------ collector

@dataclass
class Collector:
    http_url: str  # e.g. http://127.0.0.1:18080, what SDKs get as their host
    admin_url: str
    write_key: str
    source_id: str
    brokers: str
    raw_topic: str
    rejected_topic: str
    log: Path

    def raw_records(self, message_ids: set[str], timeout: float = CONSUME_TIMEOUT_S) -> dict[str, list["Record"]]:
        """Every raw-topic record carrying one of `message_ids`, grouped by messageId."""
        return records_by_message_id(self.brokers, self.raw_topic, message_ids, timeout)

    def rejected_mentioning(self, needle: str) -> list["Record"]:
        """Every rejected-topic record whose payload mentions `needle`."""
        return rejected_mentioning(self.brokers, self.rejected_topic, needle)


@pytest.fixture(scope="session")
def collector(broker: Broker, tmp_path_factory) -> Iterator[Collector]:
    binary = Path(os.environ.get("CDP_COLLECTOR_BIN", "target/debug/cdp-collector"))
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    if not binary.is_file():
        pytest.fail(f"collector binary {binary} is missing: run `cargo build -p cdp-collector` "
                    "or set CDP_COLLECTOR_BIN")
    work = tmp_path_factory.mktemp("collector")
    workspace = work / "workspace.yaml"
    workspace.write_text(f"sources:\n  - id: {SOURCE_ID}\n    write_key: {WRITE_KEY}\n")
    http_port, admin_port = free_port(), free_port()
    prefix = f"sdktest{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "CDP_KAFKA_BROKERS": broker.bootstrap,
        "CDP_WORKSPACE": str(workspace),
        "CDP_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "CDP_ADMIN_ADDR": f"127.0.0.1:{admin_port}",
        "CDP_TOPIC_PREFIX": prefix,
    }
    env.pop("CDP_PUBLIC_URL", None)  # the settings document must point at the Host we use
    log = work / "collector.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(binary)], env=env, cwd=work, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    c = Collector(
        http_url=f"http://127.0.0.1:{http_port}",
        admin_url=f"http://127.0.0.1:{admin_port}",
        write_key=WRITE_KEY,
        source_id=SOURCE_ID,
        brokers=broker.bootstrap,
        raw_topic=f"{prefix}.events.raw",
        rejected_topic=f"{prefix}.events.rejected",
        log=log,
    )
    try:
        wait_until("collector /readyz is 200",
                   lambda: http_status(f"{c.admin_url}/readyz") == 200,
                   STARTUP_TIMEOUT_S, proc, log)
        # /readyz answers 200 while the collector is still creating its topics and before the API
        # serves (see tests/sdk/README.md), so also wait for the API itself to answer.
        wait_until("collector API serves the settings document",
                   lambda: http_status(f"{c.http_url}/v1/projects/{WRITE_KEY}/settings") == 200,
                   STARTUP_TIMEOUT_S, proc, log)
        yield c
    finally:
        stop(proc)


# ------------------------------------------------------------------------------------- kafka reading

@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: str | None
    headers: dict[str, str]
    value: dict

    def __repr__(self) -> str:  # readable assertion messages
        return f"Record({self.topic}[{self.partition}]@{self.offset} headers={self.headers} value={json.dumps(self.value)})"


def consume(brokers: str, topic: str, keep: Callable[[Record], bool],
            done: Callable[[list[Record]], bool], timeout: float = CONSUME_TIMEOUT_S) -> list[Record]:
    """Reads `topic` from the beginning and returns every record for which `keep` is true.

    Stops once `done(kept)` holds and the consumer has also read everything the topic held at that
    moment (so duplicates already written are counted too), or when `timeout` passes; the caller
    asserts on what came back, so a timeout shows up as a precise assertion failure.
    """
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"sdk-test-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "log_level": 0,
    })
    kept: list[Record] = []
    try:
        meta = consumer.list_topics(topic, timeout=10)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            pytest.fail(f"topic {topic} does not exist: {tmeta.error if tmeta else 'no metadata'}")
        partitions = sorted(tmeta.partitions)
        # Explicit assignment from the first offset: no group rebalance to wait for.
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        last_seen: dict[int, int] = {}
        targets: dict[int, int] | None = None  # high watermarks once `done` first held
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if targets is None and done(kept):
                targets = {}
                for p in partitions:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
                    if high > low:
                        targets[p] = high - 1
            if targets is not None and all(last_seen.get(p, -1) >= off for p, off in targets.items()):
                break
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                pytest.fail(f"consuming {topic}: {msg.error()}")
            last_seen[msg.partition()] = msg.offset()
            rec = Record(
                topic=msg.topic(),
                partition=msg.partition(),
                offset=msg.offset(),
                key=msg.key().decode() if msg.key() is not None else None,
                headers={k: (v.decode() if v is not None else None) for k, v in (msg.headers() or [])},
                value=json.loads(msg.value()),
            )
            if keep(rec):
                kept.append(rec)
    finally:
        consumer.close()
    return kept


def records_by_message_id(brokers: str, topic: str, message_ids: set[str],
                          timeout: float = CONSUME_TIMEOUT_S) -> dict[str, list[Record]]:
    """Every record of `topic` whose messageId is one of `message_ids`, grouped by messageId;
    waits until each id was seen at least once (or the timeout)."""
    found = consume(
        brokers, topic,
        keep=lambda r: r.value.get("messageId") in message_ids,
        done=lambda kept: {r.value["messageId"] for r in kept} >= message_ids,
        timeout=timeout,
    )
    out: dict[str, list[Record]] = {m: [] for m in message_ids}
    for r in found:
        out[r.value["messageId"]].append(r)
    return out


def rejected_mentioning(brokers: str, topic: str, needle: str) -> list[Record]:
    """Records of the rejected topic whose payload mentions `needle` (read up to the end of the
    topic as it is now)."""
    return consume(brokers, topic, keep=lambda r: needle in json.dumps(r.value),
                   done=lambda kept: True, timeout=10)


# ----------------------------------------------------------------------------------------- clients

@dataclass
class NodeClients:
    """The Node scripts of tests/clients and the packages npm installed beside them."""
    exe: str
    dir: Path

    def run(self, script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([self.exe, str(self.dir / script), *args], cwd=self.dir,
                              capture_output=True, text=True, timeout=timeout)

    def package_version(self, name: str) -> str:
        return json.loads((self.dir / "node_modules" / name / "package.json").read_text())["version"]


@pytest.fixture(scope="session")
def node() -> NodeClients:
    exe = shutil.which("node")
    if not exe:
        pytest.fail("node is not on PATH")
    for pkg in ("@segment/analytics-node", "@segment/analytics-next", "playwright-core"):
        if not (CLIENTS_DIR / "node_modules" / pkg).is_dir():
            pytest.fail(f"{pkg} is not installed: run `npm ci --prefix tests/clients`")
    return NodeClients(exe, CLIENTS_DIR)


@pytest.fixture
def run_id() -> str:
    """Unique per test, carried in messageIds, user ids and properties."""
    return uuid.uuid4().hex[:12]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@pytest.fixture(scope="session")
def page_server() -> Iterator[str]:
    """Serves tests/clients (the test page and the installed analytics-next build) on its own
    loopback port, so the page's requests to the collector are cross-origin."""
    handler = functools.partial(_QuietHandler, directory=str(CLIENTS_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="page-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
