"""A minimal virtio-pci (modern) driver over QEMU's qtest protocol.

Lets tests play the guest without a guest kernel: QEMU runs with
-accel qtest -qtest unix:<socket>, and this module reads and writes guest
memory, I/O ports and the PCI configuration space through that socket.
It speaks split virtqueues, one request in flight per queue, and polls the
used ring (no interrupts). Python 3 standard library only.
"""

import os
import socket
import struct
import time

VIRTIO_VENDOR = 0x1AF4

# virtio_pci_common_cfg offsets
COMMON_DFSELECT = 0x00
COMMON_DF = 0x04
COMMON_GFSELECT = 0x08
COMMON_GF = 0x0C
COMMON_NUMQ = 0x12
COMMON_STATUS = 0x14
COMMON_Q_SELECT = 0x16
COMMON_Q_SIZE = 0x18
COMMON_Q_MSIX = 0x1A
COMMON_Q_ENABLE = 0x1C
COMMON_Q_NOFF = 0x1E
COMMON_Q_DESC = 0x20
COMMON_Q_AVAIL = 0x28
COMMON_Q_USED = 0x30

STATUS_ACK = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_NEEDS_RESET = 0x40

DESC_F_NEXT = 1
DESC_F_WRITE = 2


class QTest:
    """The qtest socket: QEMU connects to a socket this object listens on."""

    def __init__(self, path):
        self.path = path
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(1)
        self._sock = None
        self._buf = b""

    def accept(self, timeout=20):
        self._listener.settimeout(timeout)
        self._sock, _ = self._listener.accept()
        self._sock.settimeout(timeout)

    def close(self):
        if self._sock:
            self._sock.close()
        self._listener.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def cmd(self, line):
        """Sends one command; returns the text after "OK"."""
        self._sock.sendall(line.encode() + b"\n")
        while True:
            while b"\n" not in self._buf:
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise ConnectionError("qtest connection closed")
                self._buf += chunk
            reply, self._buf = self._buf.split(b"\n", 1)
            reply = reply.decode()
            if reply.startswith("IRQ"):
                continue
            if not reply.startswith("OK"):
                raise RuntimeError(f"qtest {line!r}: {reply}")
            return reply[2:].strip()

    def cmds(self, lines):
        """Sends several commands in one write, so QEMU runs them without
        a main-loop iteration in between; returns their answers."""
        self._sock.sendall("".join(line + "\n" for line in lines).encode())
        answers = []
        while len(answers) < len(lines):
            while b"\n" not in self._buf:
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise ConnectionError("qtest connection closed")
                self._buf += chunk
            reply, self._buf = self._buf.split(b"\n", 1)
            reply = reply.decode()
            if reply.startswith("IRQ"):
                continue
            if not reply.startswith("OK"):
                raise RuntimeError(f"qtest {lines[len(answers)]!r}: {reply}")
            answers.append(reply[2:].strip())
        return answers

    def outl(self, port, value):
        self.cmd(f"outl 0x{port:x} 0x{value:x}")

    def inl(self, port):
        return int(self.cmd(f"inl 0x{port:x}"), 16)

    def read(self, addr, size):
        return bytes.fromhex(self.cmd(f"read 0x{addr:x} 0x{size:x}")[2:])

    def write(self, addr, data):
        if data:
            self.cmd(f"write 0x{addr:x} 0x{len(data):x} 0x{data.hex()}")

    def readb(self, addr):
        return int(self.cmd(f"readb 0x{addr:x}"), 16)

    def readw(self, addr):
        return int(self.cmd(f"readw 0x{addr:x}"), 16)

    def readl(self, addr):
        return int(self.cmd(f"readl 0x{addr:x}"), 16)

    def readq(self, addr):
        return int(self.cmd(f"readq 0x{addr:x}"), 16)

    def writeb(self, addr, value):
        self.cmd(f"writeb 0x{addr:x} 0x{value:x}")

    def writew(self, addr, value):
        self.cmd(f"writew 0x{addr:x} 0x{value:x}")

    def writel(self, addr, value):
        self.cmd(f"writel 0x{addr:x} 0x{value:x}")

    def writeq(self, addr, value):
        self.cmd(f"writeq 0x{addr:x} 0x{value:x}")

    def clock_step(self, ns):
        return self.cmd(f"clock_step {ns}")


class Queue:
    """A split virtqueue with one chain in flight."""

    def __init__(self, index, size, desc, avail, used):
        self.index = index
        self.size = size
        self.desc = desc
        self.avail = avail
        self.used = used
        self.avail_idx = 0
        self.used_idx = 0


class VirtioPCI:
    """One modern virtio-pci function on bus 0, found by device ID."""

    def __init__(self, qt, device_id, bar=0xE0000000, mem=0x2000000):
        self.qt = qt
        self.bar_addr = bar
        self._mem = mem
        self.devfn = None
        for slot in range(32):
            devfn = slot << 3
            if self.cfg_read32(devfn, 0) == (device_id << 16 | VIRTIO_VENDOR):
                self.devfn = devfn
                break
        if self.devfn is None:
            raise RuntimeError(f"no virtio device 0x{device_id:x}")
        self.caps = self._virtio_caps()
        self.map_bar()
        self.common = bar + self.caps[1][1]
        self.notify = bar + self.caps[2][1]
        self.notify_mult = self.caps[2][2]
        self.device_cfg = bar + self.caps[4][1]
        self.queues = {}

    def map_bar(self):
        """Maps the 64-bit memory BAR; memory space and bus mastering on.
        Needed again after a system reset."""
        bar_no = self.caps[1][0]
        self.cfg_write32(0x10 + 4 * bar_no, self.bar_addr)
        self.cfg_write32(0x14 + 4 * bar_no, 0)
        cmd = self.cfg_read32(self.devfn, 4) & 0xFFFF
        self.cfg_write32(0x04, cmd | 0x6)

    def alloc(self, size, align=4096):
        """Bump allocator for guest memory below the test's zones."""
        addr = (self._mem + align - 1) // align * align
        self._mem = addr + size
        self.qt.write(addr, bytes(size))
        return addr

    def cfg_read32(self, devfn, off):
        self.qt.outl(0xCF8, 0x80000000 | devfn << 8 | (off & 0xFC))
        return self.qt.inl(0xCFC)

    def cfg_write32(self, off, value):
        self.qt.outl(0xCF8, 0x80000000 | self.devfn << 8 | (off & 0xFC))
        self.qt.outl(0xCFC, value)

    def _virtio_caps(self):
        """cfg_type -> (bar, offset, notify multiplier)."""
        caps = {}
        ptr = self.cfg_read32(self.devfn, 0x34) & 0xFF
        while ptr:
            w0 = self.cfg_read32(self.devfn, ptr)
            cap_id, nxt, cfg_type = w0 & 0xFF, (w0 >> 8) & 0xFF, w0 >> 24
            if cap_id == 0x09:
                bar = self.cfg_read32(self.devfn, ptr + 4) & 0xFF
                offset = self.cfg_read32(self.devfn, ptr + 8)
                mult = (self.cfg_read32(self.devfn, ptr + 16)
                        if cfg_type == 2 else 0)
                caps.setdefault(cfg_type, (bar, offset, mult))
            ptr = nxt
        return caps

    # Device status and features

    def status(self):
        return self.qt.readb(self.common + COMMON_STATUS)

    def set_status(self, value):
        self.qt.writeb(self.common + COMMON_STATUS, value)

    def device_features(self):
        feats = 0
        for sel in (0, 1):
            self.qt.writel(self.common + COMMON_DFSELECT, sel)
            feats |= self.qt.readl(self.common + COMMON_DF) << (32 * sel)
        return feats

    def init(self, features, queues):
        """Reset, negotiate `features`, set up `queues`, DRIVER_OK."""
        self.map_bar()
        self.set_status(0)
        self.set_status(STATUS_ACK)
        self.set_status(STATUS_ACK | STATUS_DRIVER)
        for sel in (0, 1):
            self.qt.writel(self.common + COMMON_GFSELECT, sel)
            self.qt.writel(self.common + COMMON_GF,
                           (features >> (32 * sel)) & 0xFFFFFFFF)
        self.set_status(STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK)
        if not self.status() & STATUS_FEATURES_OK:
            raise RuntimeError("device refused the features")
        self.queues = {}
        for index in queues:
            self.qt.writew(self.common + COMMON_Q_SELECT, index)
            size = self.qt.readw(self.common + COMMON_Q_SIZE)
            q = Queue(index, size, self.alloc(16 * size),
                      self.alloc(6 + 2 * size), self.alloc(6 + 8 * size))
            self.qt.writew(self.common + COMMON_Q_MSIX, 0xFFFF)
            for off, addr in ((COMMON_Q_DESC, q.desc),
                              (COMMON_Q_AVAIL, q.avail),
                              (COMMON_Q_USED, q.used)):
                self.qt.writel(self.common + off, addr & 0xFFFFFFFF)
                self.qt.writel(self.common + off + 4, addr >> 32)
            q.notify_off = self.qt.readw(self.common + COMMON_Q_NOFF)
            self.qt.writew(self.common + COMMON_Q_ENABLE, 1)
            self.queues[index] = q
        self.set_status(STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK |
                        STATUS_DRIVER_OK)

    def num_queues(self):
        return self.qt.readw(self.common + COMMON_NUMQ)

    # Requests

    def post(self, index, request, resp_len):
        """Queues one chain: request (device-readable), resp_len writable."""
        q = self.queues[index]
        req = self.alloc(max(len(request), 1), 64)
        resp = self.alloc(max(resp_len, 1), 64)
        self.qt.write(req, request)
        descs = []
        if request:
            descs.append((req, len(request), 0))
        if resp_len:
            descs.append((resp, resp_len, DESC_F_WRITE))
        table = b""
        for i, (addr, length, flags) in enumerate(descs):
            last = i == len(descs) - 1
            table += struct.pack("<QIHH", addr, length,
                                 flags | (0 if last else DESC_F_NEXT),
                                 0 if last else i + 1)
        self.qt.write(q.desc, table)
        self.qt.writew(q.avail + 4 + 2 * (q.avail_idx % q.size), 0)
        q.avail_idx = (q.avail_idx + 1) & 0xFFFF
        self.qt.writew(q.avail + 2, q.avail_idx)
        self.qt.writew(self.notify + q.notify_off * self.notify_mult, index)
        return resp

    def wait_used(self, index, timeout=10):
        """Waits for the next used element; returns its length."""
        q = self.queues[index]
        deadline = time.monotonic() + timeout
        while self.qt.readw(q.used + 2) == q.used_idx:
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue {index}: no used element")
            time.sleep(0.001)
        elem = q.used + 4 + 8 * (q.used_idx % q.size)
        length = self.qt.readl(elem + 4)
        q.used_idx = (q.used_idx + 1) & 0xFFFF
        return length

    def request(self, index, request, resp_len=8):
        """Sends a request and returns (used length, response bytes)."""
        resp = self.post(index, request, resp_len)
        length = self.wait_used(index)
        return length, self.qt.read(resp, resp_len)
