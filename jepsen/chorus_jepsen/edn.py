"""history.jsonl -> an Elle list-append history in EDN, one op map per line.

    {:type :invoke, :f :txn, :value [[:append 3 17]], :process 2, :time 123, :index 0}
    {:type :ok, :f :txn, :value [[:r 3 [1 2 5]]], :process 4, :time 456, :index 1}
    {:type :info, :f :start-partition, :value "partition ...", :process :nemesis, ...}

Every client op becomes a one-micro-op :txn (:append k v, or :r k nil / :r k [...]
when a read completed ok). :index is renumbered 0, 1, 2, ... in history order.
Nemesis ops keep their human string value; f is :start-<kind> / :stop-<kind> with
<kind> the first word of the start's value (e.g. :start-partition).

read_edn(path) is a small EDN reader (maps, vectors, lists, keywords, strings,
ints, floats, nil, booleans) for checking the output.
"""
import re


class Keyword(str):
    """An EDN keyword (the text without the colon)."""

    def __repr__(self):
        return ":" + self


def _kw(name):
    name = re.sub(r"[^A-Za-z0-9*+!_?<>=.-]+", "-", str(name)).strip("-")
    return ":" + (name or "unknown")


def _str(s):
    s = str(s)
    s = s.replace("\\", "\\\\").replace('"', '\\"')
    s = s.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return '"' + s + '"'


def to_edn(x):
    if x is None:
        return "nil"
    if x is True:
        return "true"
    if x is False:
        return "false"
    if isinstance(x, Keyword):
        return ":" + x
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, str):
        return _str(x)
    if isinstance(x, (list, tuple)):
        return "[" + " ".join(to_edn(e) for e in x) + "]"
    if isinstance(x, dict):
        return "{" + ", ".join("%s %s" % (to_edn(k), to_edn(v))
                               for k, v in x.items()) + "}"
    return _str(x)


def _nemesis_kind(value):
    m = re.match(r"\s*([A-Za-z][A-Za-z0-9_-]*)", str(value or ""))
    return m.group(1).lower() if m else None


def _sort(ops):
    if all(isinstance(o.get("index"), int) for o in ops):
        return sorted(ops, key=lambda o: o["index"])
    return list(ops)


def op_lines(ops):
    """The EDN lines (without newlines) for the history records `ops`."""
    lines, open_kind = [], None
    for i, op in enumerate(_sort(ops)):
        fields = []
        if op.get("process") == "nemesis":
            f = str(op.get("f") or "nemesis")
            kind = _nemesis_kind(op.get("value"))
            if f == "start":
                open_kind = open_kind or kind
                kind = open_kind
            elif f == "stop":
                kind = open_kind or kind
                open_kind = None
            fname = "%s-%s" % (f, kind) if kind and f in ("start", "stop") else f
            fields += [(":type", ":info"), (":f", _kw(fname)),
                       (":value", to_edn(op.get("value"))), (":process", ":nemesis")]
        else:
            t = op.get("type") or "info"
            k, v = op.get("key"), op.get("value")
            if op.get("f") == "append":
                mop = "[:append %s %s]" % (to_edn(k), to_edn(v))
            else:
                rv = v if (t == "ok" and isinstance(v, list)) else None
                mop = "[:r %s %s]" % (to_edn(k), to_edn(rv))
            fields += [(":type", _kw(t)), (":f", ":txn"), (":value", "[%s]" % mop),
                       (":process", to_edn(op.get("process")))]
        if op.get("time") is not None:
            fields.append((":time", to_edn(op.get("time"))))
        fields.append((":index", str(i)))
        if op.get("node") is not None:
            fields.append((":node", to_edn(op.get("node"))))
        if op.get("error") is not None:
            fields.append((":error", to_edn(str(op.get("error")))))
        if op.get("final"):
            fields.append((":final?", "true"))
        lines.append("{" + ", ".join("%s %s" % kv for kv in fields) + "}")
    return lines


def write_edn(ops, path):
    """Write the history records `ops` to `path` as EDN, one op map per line.
    Returns the number of ops written."""
    lines = op_lines(ops)
    with open(path, "w") as f:
        for line in lines:
            f.write(line + "\n")
    return len(lines)


# --------------------------------------------------------------------------
# a small reader

_TOKEN = re.compile(r'''
    (?P<ws>[\s,]+|;[^\n]*)
  | (?P<open>[\[({])
  | (?P<close>[\])}])
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<atom>[^\s,\[\](){}"]+)
''', re.X)

_ESC = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _atom(a):
    if a == "nil":
        return None
    if a == "true":
        return True
    if a == "false":
        return False
    if a.startswith(":"):
        return Keyword(a[1:])
    if re.fullmatch(r"[-+]?\d+N?", a):
        return int(a.rstrip("N"))
    if re.fullmatch(r"[-+]?(\d+\.\d*|\d*\.\d+|\d+)([eE][-+]?\d+)?M?", a):
        return float(a.rstrip("M"))
    return a   # a symbol: kept as a plain string


class EdnError(ValueError):
    pass


def parse_edn(text):
    """All top-level forms of `text`, as a list."""
    stack, out, pos = [], [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise EdnError("bad EDN at offset %d: %r" % (pos, text[pos:pos + 20]))
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "open":
            stack.append((m.group(), []))
            continue
        if kind == "close":
            if not stack:
                raise EdnError("unbalanced %r at offset %d" % (m.group(), m.start()))
            o, items = stack.pop()
            if {"[": "]", "(": ")", "{": "}"}[o] != m.group():
                raise EdnError("%r closed by %r at offset %d" % (o, m.group(), m.start()))
            if o == "{":
                if len(items) % 2:
                    raise EdnError("odd number of forms in a map at offset %d" % m.start())
                val = {}
                for i in range(0, len(items), 2):
                    k = items[i]
                    val[tuple(k) if isinstance(k, list) else k] = items[i + 1]
            else:
                val = items
        elif kind == "str":
            val = re.sub(r"\\(.)", lambda e: _ESC.get(e.group(1), e.group(1)),
                         m.group()[1:-1])
        else:
            val = _atom(m.group())
        (stack[-1][1] if stack else out).append(val)
    if stack:
        raise EdnError("unclosed %r" % stack[-1][0])
    return out


def read_edn(path):
    """The op maps of a file written by write_edn (one map per line; raises
    EdnError if a line is not exactly one balanced map)."""
    ops = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            forms = parse_edn(line)
            if len(forms) != 1 or not isinstance(forms[0], dict):
                raise EdnError("line %d is not exactly one map" % n)
            ops.append(forms[0])
    return ops
