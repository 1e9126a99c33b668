#!/usr/bin/python3
"""End-to-end: a guest with two NUMA nodes.

Boots build/guest/bzImage with 4 GiB in two nodes of 2 GiB (node 0 below
the PCI hole: DMA and DMA32; node 1 above 4 GiB: Normal), one vCPU each,
and virtio-llfree-balloon (auto mode on, 500 ms). The device takes the
machine's RAM as one region, so the nodes are split with the legacy
`-numa node,mem=` of machine type pc-q35-5.0 (docs/device.md). Checks:

  1. the driver registers every zone of both nodes, and llfree's metadata
     of each zone lies on that zone's own node;
  2. allocations count in the NUMA statistics: a workload on CPU 1 raises
     node 1's numa_hit by at least the memory it touched;
  3. a shrink to 1 GiB, more than either node has free, takes 2 MiB frames
     from zones of both nodes; a grow returns them; auto mode reclaims on
     node 1 after a workload there freed its memory; `ha-mem stress` on
     both CPUs verifies every page throughout;
  4. the console is clean.

"""

import os
import re
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import (CHILD, GIB, MIB, QMP, REPO, Checks, finish, QMPError, run_test, settle,
                 vm)  # noqa: E402

RAM = 4 * GIB
TARGET = 1 * GIB
TOUCH_MIB = 256
NUMA_ARGS = ["-machine", "pc-q35-5.0",
             "-numa", "node,nodeid=0,cpus=0,mem=2G",
             "-numa", "node,nodeid=1,cpus=1,mem=2G"]


def llfree_zones(g):
    """/proc/llfree rows as dicts keyed by (node, zone)."""
    status, out = g.shell("cat /proc/llfree")
    rows = {}
    for line in out[1:] if status == 0 else []:
        f = line.split()
        if len(f) == 8 and f[0].isdigit():
            rows[(int(f[0]), f[1])] = dict(free=int(f[4]), free_huge=int(f[5]),
                                           reclaimed=int(f[6]))
    return rows


def numa_hit(g, node):
    status, out = g.shell("cat /sys/devices/system/node/node%d/numastat" % node)
    m = re.search(r"numa_hit (\d+)", " ".join(out)) if status == 0 else None
    return int(m.group(1)) if m else None


def metadata_on_own_node(res):
    """(ok, detail): every llfree zone's shared arrays lie in its node's
    memory, from the boot log."""
    nodes, zones = {}, []
    for _, line in res.lines:
        m = re.search(r"Initmem setup node (\d+) \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]", line)
        if m:
            nodes[int(m.group(1))] = (int(m.group(2), 16), int(m.group(3), 16))
        m = re.search(r"llfree: node (\d+) zone (\S+) .* shared trees at (0x[0-9a-f]+) .* "
                      r"lower at (0x[0-9a-f]+)", line)
        if m:
            zones.append((int(m.group(1)), m.group(2), int(m.group(3), 16),
                          int(m.group(4), 16)))
    bad = ["node %d %s" % (n, z) for n, z, t, lo in zones
           if n not in nodes or not all(nodes[n][0] <= a <= nodes[n][1] for a in (t, lo))]
    return (len(nodes) == 2 and len({n for n, *_ in zones}) == 2 and not bad,
            "%d nodes, zones %s, misplaced %s" % (len(nodes), [z[:2] for z in zones], bad))


def main():
    found = vm.variant_or_skip("llfree")
    if not found:
        return 77
    checks = Checks()
    sock = os.path.join(tempfile.mkdtemp(prefix="ha-e2e-"), "qmp.sock")
    args = NUMA_ARGS + vm.llfree_device_args(sock, auto_mode=True, interval_ms=500)
    log = os.path.join(REPO, "build", "tests", "e2e", "numa.log")
    with vm.Guest(found[0], mem="4G", smp=2, run=vm.SHELL_SERVER, qemu_args=args,
                  log_path=log) as g:
        m = g.wait_for("zones registered", 120)
        zones = llfree_zones(g)
        line = [l for _, l in g.result.lines if "zones registered" in l]
        n = re.search(r"(\d+) zones registered", line[-1]) if line else None
        checks.check(m and n and int(n.group(1)) == len(zones) and
                     {node for node, _ in zones} == {0, 1},
                     "every zone of both nodes registered",
                     "%s; /proc/llfree %s" % (line[-1:], sorted(zones)))
        ok, detail = metadata_on_own_node(g.result)
        checks.check(ok, "llfree metadata on its own node", detail)
        qmp = QMP.connect(sock, retry_for=10)

        before = numa_hit(g, 1)
        status, _ = g.shell("taskset -c 1 ha-mem stress --size %dM --rounds 1 --phases anon "
                            "> /dev/null" % TOUCH_MIB, timeout=300)
        after = numa_hit(g, 1)
        checks.check(status == 0 and before is not None and after is not None and
                     after - before >= TOUCH_MIB * 256,
                     "NUMA hits counted on node 1",
                     "numa_hit %s -> %s (touched %d pages)" % (before, after, TOUCH_MIB * 256))

        status, _ = g.shell("ha-mem stress --size 512M --duration 60 > /tmp/stress.log 2>&1 & "
                            "echo $! > /tmp/stress.pid")
        checks.check(status == 0, "stress started on both CPUs")
        qmp.execute("llfree-balloon", {"value": TARGET})
        info, _ = settle(qmp, 180)
        zones = llfree_zones(g)
        nodes = {node for (node, _), z in zones.items() if z["reclaimed"] > 0}
        checks.check(abs(info["actual"] - TARGET) <= CHILD and nodes == {0, 1},
                     "shrink to 1 GiB takes from both nodes",
                     "actual %d MiB, reclaimed per zone %s" %
                     (info["actual"] // MIB, {k: z["reclaimed"] for k, z in zones.items()}))
        qmp.execute("llfree-balloon", {"value": RAM})
        info, _ = settle(qmp, 120)
        checks.check(info["actual"] == RAM, "grow back to 4 GiB",
                     "actual %d MiB" % (info["actual"] // MIB))
        status, out = g.shell("wait $(cat /tmp/stress.pid); s=$?; tail -n 2 /tmp/stress.log; "
                              "[ $s = 0 ]", timeout=300)
        checks.check(status == 0, "stress on both nodes: data intact", " | ".join(out[-2:]))

        status, _ = g.shell("taskset -c 1 ha-mem stress --size 1G --rounds 1 --phases anon "
                            "> /dev/null", timeout=300)
        time.sleep(8)
        node1 = [z for (node, _), z in llfree_zones(g).items() if node == 1]
        checks.check(status == 0 and node1 and all(z["free_huge"] <= 64 for z in node1),
                     "auto mode reclaims what node 1 freed",
                     "node 1 zones: %s" % node1)
        g.send("exit\n")
        res = g.wait_exit(60)
    return finish(checks, res)


if __name__ == "__main__":
    run_test(main, (QMPError, OSError))
