"""Starts, checks and stops the local Kafka (one KRaft node), Redis and (for the archive) PostgreSQL that tests
and the demo use.

Standard library only, so `make infra` works before the virtualenv exists. Every step is idempotent:
a service that already answers on its port is reused, not started twice.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

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
    archive_url: str = ""  # REID_ARCHIVE_URL: PostgreSQL is started when it is set (or when asked)

    @classmethod
    def from_env(cls) -> InfraConfig:
        bootstrap = os.environ.get("REID_KAFKA_BOOTSTRAP", "127.0.0.1:9092").split(",")[0]
        khost, _, kport = bootstrap.rpartition(":")
        redis_url = os.environ.get("REID_REDIS_URL", "redis://127.0.0.1:6379/0")
        hostport = redis_url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        rhost, _, rport = hostport.rpartition(":")
        cache = Path(os.environ.get("REID_CACHE_DIR", Path.home() / ".cache" / "reid-stream"))
        return cls(cache, khost or "127.0.0.1", int(kport or 9092), rhost or "127.0.0.1", int(rport or 6379),
                   redis_url.split("://", 1)[0].endswith("+cluster"), os.environ.get("REID_ARCHIVE_URL", "").strip())

    @property
    def kafka_dir(self) -> Path:
        return self.cache_dir / f"kafka-{_kafka_version()}"

    @property
    def kafka_run_dir(self) -> Path:
        return self.cache_dir / "run" / f"kafka-{self.kafka_port}"

    @property
    def redis_run_dir(self) -> Path:
        return self.cache_dir / "run" / f"redis-{self.redis_port}"

    @property
    def postgres(self) -> PostgresTarget:
        return PostgresTarget.from_url(self.archive_url or DEFAULT_ARCHIVE_URL)

    @property
    def postgres_run_dir(self) -> Path:
        return self.cache_dir / "run" / f"postgres-{self.postgres.port}"


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


# --- PostgreSQL (the archive: REID_ARCHIVE_URL) --------------------------------------------------

DEFAULT_ARCHIVE_URL = "postgresql://reid@127.0.0.1:5432/reid"
POSTGRES_USER = "postgres"  # Debian's server package makes it; without it, a system user of our own
OWN_POSTGRES_USER = "reid-postgres"


@dataclass(frozen=True)
class PostgresTarget:
    """Where the archive's URL says the database is, and as whom: the local server is made to match it."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def from_url(cls, url: str) -> PostgresTarget:
        u = urlparse(url)
        return cls(u.hostname or "127.0.0.1", u.port or 5432, unquote(u.username or "reid"),
                   unquote(u.password or ""), unquote(u.path.lstrip("/")) or "reid")


def postgres_bin_dir() -> Path:
    """Debian's server binaries (the newest major installed), installed with apt-get when missing."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not found:
        _apt_install("postgresql")
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError("no PostgreSQL server in /usr/lib/postgresql/*/bin after installing Debian's postgresql")
    return found[-1].parent


def _server_account() -> pwd.struct_passwd:
    """PostgreSQL refuses to run as root: as root we run it as Debian's `postgres` (or a system user made for it)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in (POSTGRES_USER, OWN_POSTGRES_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    log(f"creating the system user {OWN_POSTGRES_USER} to run PostgreSQL")
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                    "/usr/sbin/nologin", OWN_POSTGRES_USER], check=True)
    return pwd.getpwnam(OWN_POSTGRES_USER)


def _as(account: pwd.struct_passwd) -> list[str]:
    """A command prefix that runs as the account (nothing when it is us already)."""
    if os.geteuid() == account.pw_uid:
        return []
    return ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--"]


def _acl(path: Path) -> list[tuple[int, int, int]]:
    """The directory's POSIX ACL entries (tag, permissions, id), or none."""
    try:
        raw = os.getxattr(path, "system.posix_acl_access")
    except OSError:
        return []
    return [struct.unpack_from("<HHI", raw, 4 + 8 * i) for i in range((len(raw) - 4) // 8)]


def _may_traverse(path: Path, account: pwd.struct_passwd) -> bool:
    acl = _acl(path)
    if any(t == 0x02 and i == account.pw_uid and p & 1 for t, p, i in acl):  # a named user entry of ours
        return any(t == 0x10 and p & 1 for t, p, _ in acl)
    st = path.stat()
    if st.st_uid == account.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    groups = {account.pw_gid, *(g for g in os.getgrouplist(account.pw_name, account.pw_gid))}
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _grant_traverse(path: Path, account: pwd.struct_passwd) -> None:
    """Let one user through a directory (search only: no listing, no reading), with a POSIX ACL written as the
    kernel's xattr (standard library only): the cache dir may sit in a home that only its owner may enter, such
    as root's (0700), and nobody else gets in by it."""
    mode = path.stat().st_mode
    undefined = 0xFFFFFFFF
    entries = [(0x01, (mode >> 6) & 7, undefined), (0x02, 1, account.pw_uid), (0x04, (mode >> 3) & 7, undefined),
               (0x10, ((mode >> 3) & 7) | 1, undefined), (0x20, mode & 7, undefined)]
    kept = _acl(path)
    if kept:  # an ACL already there: add our entry to it rather than lose the others
        entries = sorted({(t, i): (t, p, i) for t, p, i in [*kept, (0x02, 1, account.pw_uid)]}.values(),
                         key=lambda e: (e[0], e[2]))
        entries = [(t, p | 1, i) if t == 0x10 else (t, p, i) for t, p, i in entries]
    os.setxattr(path, "system.posix_acl_access", struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e)
                                                                                  for e in entries))
    log(f"gave {account.pw_name} search (x) access to {path} (an ACL) so that PostgreSQL reaches its data")


def _prepare_run_dir(run: Path, account: pwd.struct_passwd) -> None:
    run.mkdir(parents=True, exist_ok=True)
    for parent in reversed(run.parents):
        if not _may_traverse(parent, account):
            _grant_traverse(parent, account)
    if run.stat().st_uid != account.pw_uid:
        os.chown(run, account.pw_uid, account.pw_gid)
    run.chmod(0o700)


def postgres_ready(target: PostgresTarget, bindir: Path | None = None) -> bool:
    tool = (bindir or postgres_bin_dir()) / "pg_isready"
    return subprocess.run([str(tool), "-q", "-h", target.host, "-p", str(target.port), "-t", "2"],
                          check=False).returncode == 0


def _psql(bindir: Path, target: PostgresTarget, sql: str, database: str = "postgres") -> str:
    env = {**os.environ, "PGPASSWORD": target.password, "PGCONNECT_TIMEOUT": "5"}
    done = subprocess.run([str(bindir / "psql"), "-h", target.host, "-p", str(target.port), "-U", target.user,
                           "-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"psql on {target.host}:{target.port} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def postgres_up(cfg: InfraConfig) -> str:
    """Start the archive's PostgreSQL unless one answers on its port, make its database, and return the URL.

    Loopback only, data under the cache dir, run as a non-root user; scram-sha-256 with the URL's password,
    or trust on 127.0.0.1 when the URL has none (a local development server, like the local Redis)."""
    target = cfg.postgres
    url = cfg.archive_url or DEFAULT_ARCHIVE_URL
    bindir = postgres_bin_dir()
    if target.host not in ("127.0.0.1", "localhost"):
        log(f"postgres: {target.host} is not this machine; nothing to start")
        return url
    if not postgres_ready(target, bindir):
        _start_postgres(cfg, target, bindir)
    else:
        log(f"postgres already answers on {target.host}:{target.port}")
    exists = _psql(bindir, target, f"SELECT 1 FROM pg_database WHERE datname = '{_sql_text(target.database)}'")
    if exists != "1":
        _psql(bindir, target, f'CREATE DATABASE "{target.database}"')
        log(f"postgres: created database {target.database}")
    return url


def _sql_text(value: str) -> str:
    return value.replace("'", "''")


def _start_postgres(cfg: InfraConfig, target: PostgresTarget, bindir: Path) -> None:
    account = _server_account()
    run = cfg.postgres_run_dir
    _prepare_run_dir(run, account)
    data, as_pg = run / "data", _as(account)
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        auth = ["--auth=trust"]
        pwfile = run / "initdb.pw"
        if target.password:
            pwfile.write_text(target.password + "\n")
            os.chown(pwfile, account.pw_uid, account.pw_gid)
            pwfile.chmod(0o600)
            auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
        try:
            subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-U", target.user, "-E", "UTF8",
                            "--no-locale", "--no-instructions", *auth], check=True, stdout=subprocess.DEVNULL)
        finally:
            pwfile.unlink(missing_ok=True)
        log(f"postgres: initialised {data}")
    logfile = run / "postgres.log"
    options = (f"-c listen_addresses={target.host} -c port={target.port} -c unix_socket_directories={run} "
               "-c shared_buffers=32MB -c max_connections=60")
    # Its own session: a test run's Ctrl-C does not reach it. pg_ctl waits until it accepts connections.
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-o", options, "-w",
                    "-t", "60", "start"], check=True, stdout=subprocess.DEVNULL, start_new_session=True)
    _wait(lambda: postgres_ready(target, bindir), "postgres", 30, logfile)
    log(f"postgres {bindir.parent.name} ready on {target.host}:{target.port} (data in {data}, runs as "
        f"{account.pw_name})")


def postgres_down(cfg: InfraConfig) -> None:
    """Stop the server this cache dir runs (a fast shutdown: clients are disconnected, nothing is lost)."""
    data = cfg.postgres_run_dir / "data"
    if not (data / "postmaster.pid").exists():
        return
    bindir = postgres_bin_dir()
    subprocess.run([*_as(_server_account()), str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t",
                    "60", "stop"], check=False, stdout=subprocess.DEVNULL)
    log("postgres stopped")


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
    postgres_down(cfg)


def up(cfg: InfraConfig, postgres: bool = False) -> None:
    """Redis (or a Redis Cluster, for a redis+cluster:// URL) and Kafka; PostgreSQL too when the archive is on
    (REID_ARCHIVE_URL) or when asked."""
    if cfg.redis_cluster:
        redis_cluster_up(cfg, tuple(range(cfg.redis_port, cfg.redis_port + len(CLUSTER_PORTS))))
    else:
        redis_up(cfg)
    kafka_up(cfg, keep_data=os.environ.get("REID_KAFKA_KEEP_DATA", "") == "1")
    if postgres or cfg.archive_url:
        postgres_up(cfg)


def status(cfg: InfraConfig) -> bool:
    k = port_open(cfg.kafka_host, cfg.kafka_port)
    r = redis_ping(cfg.redis_host, cfg.redis_port)
    print(f"kafka {cfg.kafka_host}:{cfg.kafka_port}: {'up' if k else 'down'}")
    print(f"redis {cfg.redis_host}:{cfg.redis_port}: {'up' if r else 'down'}")
    if cfg.archive_url:
        pg = cfg.postgres
        p = postgres_ready(pg)
        print(f"postgres {pg.host}:{pg.port}: {'up' if p else 'down'}")
        return k and r and p
    return k and r


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    cmd = args[0] if args else "up"
    cfg = InfraConfig.from_env()
    try:
        if cmd == "up":
            up(cfg, postgres="--postgres" in args[1:])
        elif cmd == "postgres":  # only the archive's server; prints its URL
            print(postgres_up(cfg))
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
            print(f"usage: python -m reid_stream.infra [up [--postgres]|down|status|postgres|jars|browser|"
                  f"cluster [down]], not {cmd!r}", file=sys.stderr)
            return 2
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        log(f"error: {exc}")
        return 1
    return 0
