"""A throwaway ClickHouse server for the tests and the benchmark.

Starts the installed ``clickhouse-server`` (Debian's 18.16 works) as a plain child
process with a temporary config and data directory: listening on 127.0.0.1 only,
on free ports, user ``default`` without a password, logs in the temporary
directory. No service, no system files touched. Stopped by PID.

Example:

    with ClickHouseServer(tmp_path) as server:
        server.client().execute("select 1")
        url = server.url  # clickhouse://127.0.0.1:PORT/default
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from xml.sax.saxutils import escape

DEFAULT_BINARY = "/usr/sbin/clickhouse-server"

CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{root}/log/server.log</log>
        <errorlog>{root}/log/server.err.log</errorlog>
        <size>10M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{tcp_port}</tcp_port>
    <http_port>{http_port}</http_port>
    <path>{root}/data/</path>
    <tmp_path>{root}/tmp/</tmp_path>
    <user_files_path>{root}/user_files/</user_files_path>
    <format_schema_path>{root}/format_schemas/</format_schema_path>
    <timezone>{timezone}</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>32</max_concurrent_queries>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <users_config>{root}/users.xml</users_config>
</yandex>
"""

USERS = """<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"""


def find_binary() -> str | None:
    """The clickhouse-server program: $CLICKHOUSE_SERVER, /usr/sbin, or on PATH."""
    for candidate in (os.environ.get("CLICKHOUSE_SERVER"), DEFAULT_BINARY, shutil.which("clickhouse-server")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClickHouseServer:
    """One clickhouse-server process under ``root``; ``start()`` waits until it answers."""

    def __init__(self, root: Path, binary: str | None = None, timezone: str = "UTC"):
        self.root = Path(root)
        self.binary = binary or find_binary()
        self.timezone = timezone
        self.host = "127.0.0.1"
        self.tcp_port = 0
        self.http_port = 0
        self.process: subprocess.Popen | None = None
        self._output = None

    @property
    def url(self) -> str:
        return f"clickhouse://{self.host}:{self.tcp_port}/default"

    def client(self, **kwargs):
        from clickhouse_driver import Client

        return Client(self.host, port=self.tcp_port, connect_timeout=5, **kwargs)

    def _write_config(self) -> Path:
        for sub in ("log", "data", "tmp", "user_files", "format_schemas"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        root = escape(str(self.root))
        (self.root / "users.xml").write_text(USERS)
        config = self.root / "config.xml"
        config.write_text(
            CONFIG.format(
                root=root, tcp_port=self.tcp_port, http_port=self.http_port, timezone=escape(self.timezone)
            )
        )
        return config

    def start(self, timeout: float = 60) -> "ClickHouseServer":
        """Start the server and wait (up to ``timeout`` s) until ``SELECT 1`` works.

        Raises:
            RuntimeError: no binary, the process exited, or it never answered.
        """
        if self.binary is None:
            raise RuntimeError("clickhouse-server is not installed")
        last_error: Exception | None = None
        for _attempt in range(3):  # a free port can be taken before the server binds it
            self.tcp_port, self.http_port = free_port(), free_port()
            config = self._write_config()
            if self._output is None:
                self._output = open(self.root / "log" / "stdout.log", "ab")
            self.process = subprocess.Popen(
                [self.binary, f"--config-file={config}"],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    last_error = RuntimeError(
                        f"clickhouse-server exited with {self.process.returncode}: {self.log_tail()}"
                    )
                    break
                try:
                    if self.client().execute("SELECT 1") == [(1,)]:
                        return self
                except Exception as exc:  # not listening yet
                    last_error = exc
                time.sleep(0.2)
            else:
                self.stop()
                raise RuntimeError(f"clickhouse-server did not answer within {timeout:.0f} s: {last_error}")
        raise RuntimeError(f"clickhouse-server did not start: {last_error}")

    def log_tail(self, lines: int = 20) -> str:
        texts = []
        for name in ("server.err.log", "stdout.log"):
            path = self.root / "log" / name
            if path.exists():
                texts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(texts[-lines:])

    def stop(self, grace: float = 15) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; by PID only."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> "ClickHouseServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
