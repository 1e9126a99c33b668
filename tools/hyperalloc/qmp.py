"""A small QMP client: Python 3 standard library only.

    with QMP.connect("/tmp/qmp.sock", timeout=10) as qmp:
        qmp.execute("llfree-balloon", {"value": 512 << 20})
        info = qmp.execute("query-llfree-balloon")
        event = qmp.wait_event("LLFREE_BALLOON_CHANGE", timeout=5)
        print(qmp.hmp("info llfree_balloon"))

QEMU side: -qmp unix:/tmp/qmp.sock,server=on,wait=off (or -chardev socket
+ -mon mode=control). Errors of commands raise QMPError with the QMP error
class and description; events received while waiting for a reply are kept
for wait_event()/events().
"""

import json
import socket
import time


class QMPError(Exception):
    """A command answered with an error."""

    def __init__(self, command, error):
        self.command = command
        self.error_class = error.get("class", "")
        self.desc = error.get("desc", "")
        super().__init__(f"{command}: {self.error_class}: {self.desc}")


class QMP:
    """One QMP connection in capabilities-negotiated (command) mode."""

    def __init__(self, sock, timeout):
        self._sock = sock
        self._timeout = timeout
        self._buf = b""
        self._events = []
        self._next_id = 0
        self.greeting = self._read_message(time.monotonic() + timeout)
        if "QMP" not in self.greeting:
            raise ConnectionError(f"not a QMP greeting: {self.greeting}")
        self.execute("qmp_capabilities")

    @classmethod
    def connect(cls, path, timeout=10.0, retry_for=0.0):
        """Connects to a unix socket, retrying up to retry_for seconds."""
        deadline = time.monotonic() + retry_for
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        return cls(sock, timeout)

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read_message(self, deadline):
        """Returns the next JSON message, waiting until deadline."""
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no QMP message in time")
            self._sock.settimeout(left)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP connection closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        if not line.strip():
            return self._read_message(deadline)
        return json.loads(line)

    def execute(self, command, arguments=None, timeout=None):
        """Runs a command; returns its "return" value or raises QMPError."""
        self._next_id += 1
        msg = {"execute": command, "id": self._next_id}
        if arguments:
            msg["arguments"] = arguments
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        deadline = time.monotonic() + (timeout or self._timeout)
        while True:
            reply = self._read_message(deadline)
            if "event" in reply:
                self._events.append(reply)
                continue
            if reply.get("id") != self._next_id:
                continue
            if "error" in reply:
                raise QMPError(command, reply["error"])
            return reply.get("return")

    def hmp(self, command_line):
        """Runs an HMP command; returns its output text."""
        return self.execute("human-monitor-command",
                            {"command-line": command_line})

    def events(self):
        """Returns and forgets the events received so far."""
        events, self._events = self._events, []
        return events

    def wait_event(self, name, timeout=None):
        """Returns the first (possibly earlier) event called name."""
        deadline = time.monotonic() + (timeout or self._timeout)
        while True:
            for i, event in enumerate(self._events):
                if event["event"] == name:
                    return self._events.pop(i)
            self._events.append(self._read_message(deadline))
