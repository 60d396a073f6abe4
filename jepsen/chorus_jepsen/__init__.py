"""chorus's Jepsen-style consistency suite (Python 3 standard library only).

Modules: net (namespaces, bridge, partitions), db (chorusd processes, clocks),
nemesis (faults and their schedule), runner (`jepsen/run`), workload (clients and
fanout subscribers), history (history.jsonl, fanout.jsonl), checker, edn, plots.
See docs/jepsen.md.
"""
