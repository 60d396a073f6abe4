"""The Jepsen topology: network namespaces on one bridge, and partitions.

    chj-n1 .. chj-n5   one per chorusd node, 10.77.0.11 .. 10.77.0.15/24 (eth0)
    chj-client         the harness's workload, 10.77.0.100/24 (eth0)
    chj-br0            a bridge in the root namespace (no address) joining the
                       host ends of the veth pairs chj-v1 .. chj-v5, chj-vc

Everything is created and removed *by name*, so teardown works from any state,
including after a crash of the harness (`jepsen/run cleanup`).  Only the
addresses above are ever configured or targeted.

Partitions are drop rules inside each node's namespace (nft table `inet chj`,
or an iptables chain CHJ when nft is missing): for node n, every packet from or
to the IP of a node that n must not reach is dropped.  The client address
10.77.0.100 is never dropped, so the workload reaches every gateway; only
node-to-node traffic (Raft, store RPC, fanout subscriptions) is cut.
"""
import json
import os
import shutil
import subprocess

BRIDGE = "chj-br0"
CLIENT_NS = "chj-client"
CLIENT_IP = "10.77.0.100"
PREFIX = 24
NODE_IDS = (1, 2, 3, 4, 5)
INSTALL_DEPS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "..", "..", "scripts", "install-deps.sh")


def node_ns(n):
    return "chj-n%d" % n


def node_ip(n):
    return "10.77.0.%d" % (10 + n)


def _host_veth(ns):
    return "chj-vc" if ns == CLIENT_NS else "chj-v%s" % ns[len("chj-n"):]


def all_namespaces():
    return [node_ns(n) for n in NODE_IDS] + [CLIENT_NS]


def run(cmd, check=True, input=None, timeout=30):
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s -> %d: %s" % (" ".join(cmd), p.returncode,
                                             (p.stderr or p.stdout).strip()))
    return p


def in_ns(ns, cmd):
    """The command line that runs cmd inside namespace ns."""
    return ["ip", "netns", "exec", ns] + list(cmd)


def ensure_tools():
    """ip and nft (or iptables) must exist; installs them with the project's
    install script when they do not."""
    need = shutil.which("ip") is None or (shutil.which("nft") is None and
                                          shutil.which("iptables") is None)
    if need and os.path.exists(INSTALL_DEPS):
        subprocess.run(["bash", INSTALL_DEPS], check=False)
    if shutil.which("ip") is None:
        raise RuntimeError("iproute2 (ip) is missing; run scripts/install-deps.sh")
    if shutil.which("nft") is None and shutil.which("iptables") is None:
        raise RuntimeError("neither nft nor iptables is available; "
                           "run scripts/install-deps.sh")


def existing_namespaces():
    p = run(["ip", "-json", "netns", "list"], check=False)
    try:
        return {e["name"] for e in (json.loads(p.stdout or "[]") or [])}
    except ValueError:
        return set()


def _link_exists(name, ns=None):
    cmd = (["ip", "-n", ns] if ns else ["ip"]) + ["link", "show", "dev", name]
    return run(cmd, check=False).returncode == 0


# ---- create / destroy -----------------------------------------------------------

def create():
    """Creates the whole topology; idempotent (each step is skipped when done)."""
    ensure_tools()
    have = existing_namespaces()
    if not _link_exists(BRIDGE):
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "link", "set", BRIDGE, "up"])
    for ns in all_namespaces():
        ip = CLIENT_IP if ns == CLIENT_NS else node_ip(int(ns[len("chj-n"):]))
        if ns not in have:
            run(["ip", "netns", "add", ns])
        host = _host_veth(ns)
        if not _link_exists("eth0", ns):
            if _link_exists(host):          # a half-made pair from an earlier crash
                run(["ip", "link", "del", host], check=False)
            run(["ip", "link", "add", host, "type", "veth", "peer", "name", "eth0",
                 "netns", ns])
        run(["ip", "link", "set", host, "master", BRIDGE])
        run(["ip", "link", "set", host, "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        addrs = run(["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
        if (" %s/" % ip) not in addrs:
            run(["ip", "-n", ns, "addr", "add", "%s/%d" % (ip, PREFIX), "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])


def ns_pids(ns):
    p = run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split() if x.strip().isdigit()]


def destroy():
    """Removes namespaces, veths and the bridge, by name; never fails.  Callers
    kill the processes inside first (ns_pids)."""
    have = existing_namespaces()
    for ns in all_namespaces():
        if ns in have:
            run(["ip", "netns", "del", ns], check=False)
        host = _host_veth(ns)
        if _link_exists(host):
            run(["ip", "link", "del", host], check=False)
    if _link_exists(BRIDGE):
        run(["ip", "link", "del", BRIDGE], check=False)


# ---- partitions -----------------------------------------------------------------

def grudge_from_groups(groups):
    """[[1,2],[3,4,5]] -> {node: set of nodes it must not reach}: a clean cut
    between the groups (nodes not named are cut from everybody)."""
    grudge = {}
    where = {}
    for i, g in enumerate(groups):
        for n in g:
            where[n] = i
    for n in NODE_IDS:
        grudge[n] = {m for m in NODE_IDS
                     if m != n and (n not in where or m not in where
                                    or where[m] != where[n])}
    return grudge


def _backend():
    return "nft" if shutil.which("nft") else "iptables"


def _nft_rules(blocked):
    ips = ", ".join(node_ip(m) for m in sorted(blocked))
    return ("table inet chj {\n"
            "  chain input { type filter hook input priority 0; policy accept;\n"
            "    ip saddr { %s } drop\n  }\n"
            "  chain output { type filter hook output priority 0; policy accept;\n"
            "    ip daddr { %s } drop\n  }\n"
            "}\n" % (ips, ips))


def _heal_node(n, backend):
    ns = node_ns(n)
    if backend == "nft":
        run(in_ns(ns, ["nft", "delete", "table", "inet", "chj"]), check=False)
    else:
        for chain_hook in (("INPUT", "CHJ-IN"), ("OUTPUT", "CHJ-OUT")):
            hook, chain = chain_hook
            while run(in_ns(ns, ["iptables", "-D", hook, "-j", chain]),
                      check=False).returncode == 0:
                pass
            run(in_ns(ns, ["iptables", "-F", chain]), check=False)
            run(in_ns(ns, ["iptables", "-X", chain]), check=False)


def partition(grudge):
    """Installs the drop rules of a grudge ({node: nodes it must not reach}).
    Replaces any earlier partition.  Cuts are made symmetric."""
    sym = {n: set() for n in NODE_IDS}
    for n, bad in grudge.items():
        for m in bad:
            if m != n and m in sym and n in sym:
                sym[n].add(m)
                sym[m].add(n)
    backend = _backend()
    for n in NODE_IDS:
        _heal_node(n, backend)
        blocked = sym[n]
        if not blocked:
            continue
        ns = node_ns(n)
        if backend == "nft":
            run(in_ns(ns, ["nft", "-f", "-"]), input=_nft_rules(blocked))
        else:
            for hook, chain, flag in (("INPUT", "CHJ-IN", "-s"), ("OUTPUT", "CHJ-OUT", "-d")):
                run(in_ns(ns, ["iptables", "-N", chain]))
                for m in sorted(blocked):
                    run(in_ns(ns, ["iptables", "-A", chain, flag, node_ip(m), "-j", "DROP"]))
                run(in_ns(ns, ["iptables", "-I", hook, "-j", chain]))
    return sym


def heal():
    backend = _backend()
    for n in NODE_IDS:
        _heal_node(n, backend)


def describe_grudge(grudge):
    """A short human string: {1:[2,3],2:[...]} of who cannot reach whom."""
    parts = ["%d:[%s]" % (n, ",".join(str(m) for m in sorted(grudge[n])))
             for n in sorted(grudge) if grudge[n]]
    return "{" + ",".join(parts) + "}"
