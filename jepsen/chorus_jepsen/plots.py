"""Jepsen-style performance plots of a history, drawn with gnuplot.

write_plots(ops, out_dir) writes, in out_dir:
  latency.png   every completed client op: latency (ms, log scale) at its invoke
                time; ok / fail / info in different colours, append vs read shapes;
  rate.png      completions per second (ok / fail / info, append vs read);
  both with the fault windows (a nemesis "start" to the next "stop") shaded,
  and next to them the data (latency-<f>-<type>.dat, rate.dat, nemesis.dat) and
  the gnuplot scripts (latency.gnuplot, rate.gnuplot), so a plot can be redrawn
  by hand: cd out_dir && gnuplot latency.gnuplot.

It never raises for a missing or failing gnuplot: the returned
{"ok": bool, "files": [...], "notes": [...]} says what happened.
"""
import math
import os
import shutil
import subprocess

try:
    from . import checker
except ImportError:                       # run as a plain module
    import checker

TYPES = ("ok", "info", "fail")
FS = ("append", "read")
COLORS = {"ok": "#81BFFC", "info": "#FFA400", "fail": "#FF1E90"}   # Jepsen's
POINTS = {"append": 7, "read": 9}          # filled circle, filled triangle
DASHES = {"append": 1, "read": 2}
NEMESIS_COLORS = ["#E07070", "#70A0E0", "#80C070", "#D0B050", "#B080D0", "#60C0C0"]
WIDTH, HEIGHT = 1200, 600


def _gp_str(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _terminal(gnuplot):
    """pngcairo when this gnuplot has it (headless is fine), else libgd png."""
    try:
        r = subprocess.run([gnuplot, "-e", "set terminal pngcairo"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode == 0 and "unknown" not in r.stderr.lower():
            return "pngcairo enhanced size %d,%d font 'DejaVu Sans,10'" % (WIDTH, HEIGHT)
    except (OSError, subprocess.SubprocessError):
        pass
    return "png truecolor enhanced size %d,%d" % (WIDTH, HEIGHT)


def _windows(ops, t_end):
    out = []
    for t0, t1, label in checker.nemesis_windows(ops):
        t1 = t_end if t1 is None else t1
        kind = (label.split() or ["fault"])[0].lower()
        out.append((t0 / 1e9, t1 / 1e9, kind, label))
    return out


def _shading(windows):
    """gnuplot lines shading the windows, and the legend entries (plot terms)."""
    kinds = []
    for w in windows:
        if w[2] not in kinds:
            kinds.append(w[2])
    color = {k: NEMESIS_COLORS[i % len(NEMESIS_COLORS)] for i, k in enumerate(kinds)}
    lines = []
    for n, (x0, x1, kind, _) in enumerate(windows, 1):
        lines.append("set object %d rect from %.6f, graph 0 to %.6f, graph 1 "
                     "fc rgb '%s' fs transparent solid 0.18 noborder behind"
                     % (n, x0, x1, color[kind]))
    legend = ["NaN with boxes fs transparent solid 0.18 noborder lc rgb '%s' "
              "title %s" % (color[k], _gp_str(k)) for k in kinds]
    return lines, legend


def _write(path, header, rows):
    with open(path, "w") as f:
        f.write("# " + header + "\n")
        for r in rows:
            f.write(" ".join(str(x) for x in r) + "\n")


def write_plots(ops, out_dir, title="chorus"):
    res = {"ok": False, "files": [], "notes": []}
    try:
        return _write_plots(ops, out_dir, title, res)
    except Exception as e:               # plots must never fail a run
        res["notes"].append("plotting failed: %s: %s" % (type(e).__name__, e))
        return res


def _write_plots(ops, out_dir, title, res):
    os.makedirs(out_dir, exist_ok=True)
    client, _ = checker.pair_ops(ops)
    times = [r.get("time") for r in ops if isinstance(r.get("time"), (int, float))]
    t_end = max(times) if times else 0
    windows = _windows(ops, t_end)
    x_max = max(1.0, t_end / 1e9)

    # data files
    _write(os.path.join(out_dir, "nemesis.dat"), "start_s stop_s kind  (label)",
           [("%.6f" % a, "%.6f" % b, k, "# " + lbl.replace("\n", " "))
            for a, b, k, lbl in windows])
    res["files"].append(os.path.join(out_dir, "nemesis.dat"))

    series = []
    for f in FS:
        for t in TYPES:
            rows = [("%.6f" % (o.t_invoke / 1e9), "%.6f" % max(o.latency / 1e6, 0.001),
                     (o.complete or {}).get("index"))
                    for o in client if o.f == f and o.type == t and o.latency is not None]
            name = "latency-%s-%s.dat" % (f, t)
            _write(os.path.join(out_dir, name), "invoke_s latency_ms index", rows)
            res["files"].append(os.path.join(out_dir, name))
            if rows:
                series.append((f, t, name))

    done = [o for o in client if o.t_complete is not None and o.f in FS]
    bucket = 1.0 if x_max <= 600 else float(math.ceil(x_max / 600))
    nb = int(math.ceil(x_max / bucket)) + 1
    cols = [(f, t) for f in FS for t in TYPES]
    counts = {c: [0] * nb for c in cols}
    for o in done:
        if o.type in TYPES:
            b = min(nb - 1, int(o.t_complete / 1e9 / bucket))
            counts[(o.f, o.type)][b] += 1
    rate_rows = [["%.3f" % ((b + 0.5) * bucket)] +
                 ["%.3f" % (counts[c][b] / bucket) for c in cols] for b in range(nb)]
    _write(os.path.join(out_dir, "rate.dat"),
           "time_s " + " ".join("%s-%s/s" % c for c in cols), rate_rows)
    res["files"].append(os.path.join(out_dir, "rate.dat"))

    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        res["notes"].append("gnuplot not found (apt-get install gnuplot-nox): "
                            "wrote the data files only")
        return res
    if not series:
        res["notes"].append("no completed client ops: no plots")
        return res

    term = _terminal(gnuplot)
    shade, legend = _shading(windows)
    common = ["set terminal " + term,
              "set xrange [0:%.3f]" % x_max,
              "set xlabel 'time (s)'",
              "set grid lc rgb '#E0E0E0'",
              "set key outside right top",
              "set style fill transparent solid 0.18 noborder"] + shade

    lat = common + [
        "set output 'latency.png'",
        "set title %s" % _gp_str("%s latency (raw)" % title),
        "set ylabel 'latency (ms)'",
        "set logscale y",
        "plot " + ", \\\n     ".join(
            ["%s using 1:2 with points pt %d ps 0.5 lc rgb '%s' title '%s %s'"
             % (_gp_str(name), POINTS[f], COLORS[t], f, t) for f, t, name in series]
            + legend)]
    rate_terms = []
    for i, (f, t) in enumerate(cols, 2):
        if any(counts[(f, t)]):
            rate_terms.append("'rate.dat' using 1:%d with lines lw 2 dt %d lc rgb '%s' "
                              "title '%s %s'" % (i, DASHES[f], COLORS[t], f, t))
    rate = common + [
        "set output 'rate.png'",
        "set title %s" % _gp_str("%s throughput (completions/s, %gs buckets)"
                                 % (title, bucket)),
        "set ylabel 'ops/s'",
        "set yrange [0:*]",
        "plot " + ", \\\n     ".join(rate_terms + legend)]

    ok = True
    for name, script in (("latency", lat), ("rate", rate)):
        sp = os.path.join(out_dir, name + ".gnuplot")
        with open(sp, "w") as f:
            f.write("\n".join(script) + "\n")
        res["files"].append(sp)
        try:
            r = subprocess.run([gnuplot, name + ".gnuplot"], cwd=out_dir,
                               capture_output=True, text=True, timeout=120)
            err = r.stderr.strip()
            if r.returncode != 0:
                ok = False
                res["notes"].append("gnuplot %s failed (%d): %s"
                                    % (name, r.returncode, err[-500:]))
            elif err:
                res["notes"].append("gnuplot %s: %s" % (name, err[-300:]))
        except (OSError, subprocess.SubprocessError) as e:
            ok = False
            res["notes"].append("gnuplot %s: %s" % (name, e))
        png = os.path.join(out_dir, name + ".png")
        if os.path.exists(png) and os.path.getsize(png) > 0:
            res["files"].append(png)
        else:
            ok = False
    res["ok"] = ok
    return res
