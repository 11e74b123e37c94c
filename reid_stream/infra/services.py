"""Starts, checks and stops the local Kafka (one KRaft node) and Redis that tests and the demo use.

Standard library only, so `make infra` works before the virtualenv exists. Every step is idempotent:
a service that already answers on its port is reused, not started twice.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
KAFKA_POM = HERE / "kafka-pom.xml"


def _kafka_version() -> str:
    text = KAFKA_POM.read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>")]


@dataclass(frozen=True)
class InfraConfig:
    cache_dir: Path
    kafka_host: str
    kafka_port: int
    redis_host: str
    redis_port: int
    redis_cluster: bool = False  # REID_REDIS_URL is redis+cluster://: `up` starts a cluster from its port on

    @classmethod
    def from_env(cls) -> InfraConfig:
        bootstrap = os.environ.get("REID_KAFKA_BOOTSTRAP", "127.0.0.1:9092").split(",")[0]
        khost, _, kport = bootstrap.rpartition(":")
        redis_url = os.environ.get("REID_REDIS_URL", "redis://127.0.0.1:6379/0")
        hostport = redis_url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        rhost, _, rport = hostport.rpartition(":")
        cache = Path(os.environ.get("REID_CACHE_DIR", Path.home() / ".cache" / "reid-stream"))
        return cls(cache, khost or "127.0.0.1", int(kport or 9092), rhost or "127.0.0.1", int(rport or 6379),
                   redis_url.split("://", 1)[0].endswith("+cluster"))

    @property
    def kafka_dir(self) -> Path:
        return self.cache_dir / f"kafka-{_kafka_version()}"

    @property
    def kafka_run_dir(self) -> Path:
        return self.cache_dir / "run" / f"kafka-{self.kafka_port}"

    @property
    def redis_run_dir(self) -> Path:
        return self.cache_dir / "run" / f"redis-{self.redis_port}"


def log(msg: str) -> None:
    print(f"[infra] {msg}", file=sys.stderr, flush=True)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _wait(check, what: str, timeout: float, logfile: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    tail = ""
    if logfile and logfile.exists():
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-30:])
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f}s\n{tail}")


# --- Redis ---------------------------------------------------------------------------------------

def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"missing: install Debian's packages with `apt-get install {' '.join(packages)}`")
    log(f"installing Debian's {', '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)


def ensure_redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    _apt_install("redis-server")
    return shutil.which("redis-server") or "/usr/bin/redis-server"


# --- Browser (the entity browser's tests) ------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def ensure_browser() -> tuple[str, str]:
    """Debian's chromium and its chromedriver, installed when missing: never a browser download of its own."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        _apt_install("chromium", "chromium-driver")
    return CHROMIUM, CHROMEDRIVER


def redis_up(cfg: InfraConfig) -> None:
    if redis_ping(cfg.redis_host, cfg.redis_port):
        log(f"redis already answers on {cfg.redis_host}:{cfg.redis_port}")
        return
    binary = ensure_redis_binary()
    run = cfg.redis_run_dir
    run.mkdir(parents=True, exist_ok=True)
    logfile = run / "redis.log"
    # Loopback only and no persistence: the data is short-lived tracking state with TTLs.
    subprocess.run(
        [binary, "--bind", cfg.redis_host, "--port", str(cfg.redis_port), "--save", "", "--appendonly", "no",
         "--daemonize", "yes", "--pidfile", str(run / "redis.pid"), "--logfile", str(logfile), "--dir", str(run)],
        check=True,
    )
    _wait(lambda: redis_ping(cfg.redis_host, cfg.redis_port), "redis", 20, logfile)
    log(f"redis ready on {cfg.redis_host}:{cfg.redis_port}")


# --- Redis Cluster (its tests; REID_REDIS_URL=redis+cluster://...) ---------------------------------

CLUSTER_PORTS = (7101, 7102, 7103)  # three primaries, no replicas: the smallest cluster Redis accepts


def cluster_ok(host: str, port: int) -> bool:
    """The node answers and its cluster has every slot assigned and no failure."""
    try:
        out = subprocess.run([shutil.which("redis-cli") or "redis-cli", "-h", host, "-p", str(port), "cluster",
                              "info"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "cluster_state:ok" in out and "cluster_slots_assigned:16384" in out


def redis_cluster_up(cfg: InfraConfig, ports: tuple[int, ...] = CLUSTER_PORTS) -> str:
    """A three-primary Redis Cluster of Debian's redis-server on loopback (reused when it answers); its URL."""
    host = cfg.redis_host
    url = f"redis+cluster://{host}:{ports[0]}/0"
    if cluster_ok(host, ports[0]):
        log(f"redis cluster already answers on {host}:{ports[0]}")
        return url
    binary = ensure_redis_binary()
    for port in ports:
        run = cfg.cache_dir / "run" / f"redis-cluster-{port}"
        if redis_ping(host, port):  # a node left from a cluster that was never formed: start over
            subprocess.run(["redis-cli", "-h", host, "-p", str(port), "shutdown", "nosave"], check=False,
                           capture_output=True)
            time.sleep(0.5)
        shutil.rmtree(run, ignore_errors=True)  # a node's cluster state file would name an old cluster
        run.mkdir(parents=True)
        subprocess.run(
            [binary, "--bind", host, "--port", str(port), "--cluster-enabled", "yes", "--cluster-config-file",
             str(run / "nodes.conf"), "--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no",
             "--daemonize", "yes", "--pidfile", str(run / "redis.pid"), "--logfile", str(run / "redis.log"),
             "--dir", str(run)], check=True)
        _wait(lambda p=port: redis_ping(host, p), f"redis cluster node {port}", 20, run / "redis.log")
    subprocess.run(["redis-cli", "--cluster", "create", *(f"{host}:{p}" for p in ports), "--cluster-replicas", "0",
                    "--cluster-yes"], check=True, capture_output=True)
    _wait(lambda: all(cluster_ok(host, p) for p in ports), "redis cluster", 30,
          cfg.cache_dir / "run" / f"redis-cluster-{ports[0]}" / "redis.log")
    log(f"redis cluster ready on {host}:{ports[0]}-{ports[-1]} ({url})")
    return url


def redis_cluster_down(cfg: InfraConfig, ports: tuple[int, ...] = CLUSTER_PORTS) -> None:
    for port in ports:
        _stop_pidfile(cfg.cache_dir / "run" / f"redis-cluster-{port}" / "redis.pid", f"redis cluster node {port}")


# --- Kafka ---------------------------------------------------------------------------------------

def ensure_kafka_jars(cfg: InfraConfig) -> Path:
    libs = cfg.kafka_dir / "libs"
    marker = cfg.kafka_dir / ".complete"
    if marker.exists():
        return libs
    if not shutil.which("mvn"):
        raise RuntimeError("Maven (mvn) is needed once to fetch the Kafka broker jars from Maven Central")
    log(f"fetching Kafka {_kafka_version()} jars with Maven into {libs}")
    shutil.rmtree(libs, ignore_errors=True)
    subprocess.run(
        ["mvn", "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        check=True,
    )
    marker.write_text(_kafka_version())
    return libs


def _server_properties(cfg: InfraConfig, data_dir: Path) -> str:
    controller_port = cfg.kafka_port + 1
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers={cfg.kafka_host}:{controller_port}",
        f"listeners=PLAINTEXT://{cfg.kafka_host}:{cfg.kafka_port},CONTROLLER://{cfg.kafka_host}:{controller_port}",
        f"advertised.listeners=PLAINTEXT://{cfg.kafka_host}:{cfg.kafka_port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data_dir}",
        "num.partitions=1",
        # Topics are created explicitly from topics/*.json; a typo must not silently create one.
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "log.retention.hours=24",
        "",
    ])


def _log4j_config(run: Path) -> Path:
    path = run / "log4j2.properties"
    path.write_text(
        "status = error\n"
        "appender.file.type = File\nappender.file.name = FILE\n"
        f"appender.file.fileName = {run / 'server.log'}\n"
        "appender.file.layout.type = PatternLayout\nappender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\nrootLogger.appenderRef.file.ref = FILE\n"
        "logger.kafka.name = kafka\nlogger.kafka.level = INFO\n"
        "logger.state.name = state.change.logger\nlogger.state.level = WARN\n"
    )
    return path


def kafka_up(cfg: InfraConfig, keep_data: bool = False) -> None:
    """Start the broker unless one answers. Its log starts empty unless keep_data: Redis keeps nothing on
    disk, so old topics would only name entities that no longer exist, and thousands of leftover test
    partitions once made the broker take over 90 s to load."""
    if port_open(cfg.kafka_host, cfg.kafka_port):
        log(f"kafka already answers on {cfg.kafka_host}:{cfg.kafka_port}")
        return
    java = shutil.which("java")
    if not java:
        raise RuntimeError("java (17+) is needed to run the Kafka broker")
    libs = ensure_kafka_jars(cfg)
    run = cfg.kafka_run_dir
    data = run / "data"
    if data.exists() and not keep_data:
        shutil.rmtree(data)
    run.mkdir(parents=True, exist_ok=True)
    props = run / "server.properties"
    props.write_text(_server_properties(cfg, data))
    log4j = _log4j_config(run)
    classpath = f"{libs}/*"
    jvm = [java, "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
    if not (data / "meta.properties").exists():
        cluster_id = uuid.uuid4().hex[:22]
        subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                        "--standalone", "--ignore-formatted"], check=True, stdout=subprocess.DEVNULL)
    logfile = run / "server.log"
    if logfile.exists():
        logfile.rename(run / "server.log.1")
    stdout = open(run / "stdout.log", "ab")  # noqa: SIM115 - handed to the detached broker
    proc = subprocess.Popen([*jvm, "kafka.Kafka", str(props)], stdout=stdout, stderr=subprocess.STDOUT,
                            start_new_session=True)
    (run / "kafka.pid").write_text(str(proc.pid))

    def started() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"kafka exited with {proc.returncode}; see {run / 'stdout.log'} and {logfile}")
        return logfile.exists() and "Kafka Server started" in logfile.read_text(errors="replace")

    _wait(started, "kafka", 90, logfile)
    log(f"kafka {_kafka_version()} ready on {cfg.kafka_host}:{cfg.kafka_port} (data in {data})")


# --- stop ----------------------------------------------------------------------------------------

def _stop_pidfile(pidfile: Path, name: str, timeout: float = 30) -> None:
    if not pidfile.exists():
        return
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (ValueError, ProcessLookupError):
        pidfile.unlink(missing_ok=True)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        log(f"{name} did not stop in {timeout:.0f}s; killing it")
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    log(f"{name} stopped")


def down(cfg: InfraConfig) -> None:
    _stop_pidfile(cfg.kafka_run_dir / "kafka.pid", "kafka")
    _stop_pidfile(cfg.redis_run_dir / "redis.pid", "redis")
    redis_cluster_down(cfg)


def up(cfg: InfraConfig) -> None:
    if cfg.redis_cluster:
        redis_cluster_up(cfg, tuple(range(cfg.redis_port, cfg.redis_port + len(CLUSTER_PORTS))))
    else:
        redis_up(cfg)
    kafka_up(cfg, keep_data=os.environ.get("REID_KAFKA_KEEP_DATA", "") == "1")


def status(cfg: InfraConfig) -> bool:
    k = port_open(cfg.kafka_host, cfg.kafka_port)
    r = redis_ping(cfg.redis_host, cfg.redis_port)
    print(f"kafka {cfg.kafka_host}:{cfg.kafka_port}: {'up' if k else 'down'}")
    print(f"redis {cfg.redis_host}:{cfg.redis_port}: {'up' if r else 'down'}")
    return k and r


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    cmd = args[0] if args else "up"
    cfg = InfraConfig.from_env()
    try:
        if cmd == "up":
            up(cfg)
        elif cmd == "down":
            down(cfg)
        elif cmd == "status":
            return 0 if status(cfg) else 1
        elif cmd == "jars":
            ensure_kafka_jars(cfg)
        elif cmd == "cluster":
            if args[1:2] == ["down"]:
                redis_cluster_down(cfg)
            else:
                print(redis_cluster_up(cfg))
        elif cmd == "browser":
            log("browser: {} and {}".format(*ensure_browser()))
        else:
            print(f"usage: python -m reid_stream.infra [up|down|status|jars|browser|cluster [down]], not {cmd!r}",
                  file=sys.stderr)
            return 2
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        log(f"error: {exc}")
        return 1
    return 0
