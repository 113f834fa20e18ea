#!/usr/bin/env python3
"""Bookkeeping for loadtests/run.sh: turns oha JSON and /proc figures into result records (one JSON object
per line), renders them as Markdown with the ratios of our proxy to each peer, and checks a smoke run.

  report.py record  --results R.jsonl --proxy P --scenario S --family F --oha OHA.json
                    --cpu-ticks N [--cpu-user-ticks U --cpu-sys-ticks S] --wall SECONDS [--set key=value ...]
  report.py note    --results R.jsonl --proxy P --scenario S [--family F] [--set key=value ...]
  report.py render  --results R.jsonl --meta META.json --out latest.md [--chart latest.svg]
  report.py check   --results R.jsonl        # exit 1 on any error, non-2xx or failed record
"""

import argparse
import json
import os
import re
import sys

OURS = "dualstack-ingress"
# oha counts requests cut off by the end of a -z run under this name; they are not proxy errors.
DEADLINE = "aborted due to deadline"

SCENARIOS = {
    "1-keepalive": "1. Keep-alive HTTP/1.1",
    "2-conn-per-request": "2. Connection throughput: a new connection per request",
    "3-h2": "3. HTTP/2, 10 streams per connection",
    "4-hot-swap": "4. Hot swap under load (our proxy only)",
    "5-idle": "5. 10,000 idle keep-alive connections: resident memory",
    "6-routes": "6. Routing scale (our proxy only)",
    "7-tls": "7. TLS handshakes per second (a new TLS connection per request)",
}


def parse_sets(items):
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def append(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def cmd_record(a):
    with open(a.oha) as f:
        d = json.load(f)
    status = {k: int(v) for k, v in (d.get("statusCodeDistribution") or {}).items()}
    errors = {k: int(v) for k, v in (d.get("errorDistribution") or {}).items()}
    aborted = errors.pop(DEADLINE, 0)
    ok = sum(v for k, v in status.items() if k.startswith("2"))
    responses = sum(status.values())
    pct = d.get("latencyPercentiles") or {}
    clk = os.sysconf("SC_CLK_TCK")
    cpu_s = a.cpu_ticks / clk
    rec = {
        "proxy": a.proxy,
        "scenario": a.scenario,
        "family": a.family,
        "rps": d["summary"].get("requestsPerSec") or 0.0,
        "p50_ms": (pct.get("p50") or 0.0) * 1000,
        "p99_ms": (pct.get("p99") or 0.0) * 1000,
        "responses": responses,
        "ok": ok,
        "non_2xx": responses - ok,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "aborted_at_deadline": aborted,
        "cpu_s": cpu_s,
        "wall_s": a.wall,
        "cpu_us_per_req": (cpu_s / responses * 1e6) if responses else None,
        # utime and stime (fields 14 and 15 of /proc/PID/stat) apart: user space and kernel per request.
        "user_us_per_req": (a.cpu_user_ticks / clk / responses * 1e6) if responses and a.cpu_user_ticks is not None else None,
        "sys_us_per_req": (a.cpu_sys_ticks / clk / responses * 1e6) if responses and a.cpu_sys_ticks is not None else None,
        "cpu_util": cpu_s / a.wall if a.wall else None,
        # Busy time of the proxy's CPU not spent by the proxy (other processes, interrupts) over the wall time.
        "other_load": max(0.0, (a.cpu_busy_ticks - a.cpu_ticks) / clk / a.wall) if a.wall and a.cpu_busy_ticks is not None else None,
        "raw": os.path.basename(a.oha),
    }
    rec.update(parse_sets(a.set))
    append(a.results, rec)
    flag = ""
    if rec["errors"] or rec["non_2xx"]:
        flag = f"  <-- errors {rec['errors']} {errors} non-2xx {rec['non_2xx']}"
    print(
        f"  {a.proxy:18} {a.scenario:20} {a.family:4} {rec['rps']:>10.0f} req/s  p50 {rec['p50_ms']:.2f} ms"
        f"  p99 {rec['p99_ms']:.2f} ms  CPU {fmt(rec['cpu_us_per_req'], 1)} us/req (user {fmt(rec['user_us_per_req'], 1)}, kernel {fmt(rec['sys_us_per_req'], 1)};"
        f" {fmt_pct(rec['cpu_util'])}, other load {fmt_pct(rec['other_load'])}){flag}"
    )


def cmd_note(a):
    rec = {"proxy": a.proxy, "scenario": a.scenario, "family": a.family}
    rec.update(parse_sets(a.set))
    append(a.results, rec)
    shown = {k: v for k, v in rec.items() if k not in ("proxy", "scenario", "family")}
    print(f"  {a.proxy:18} {a.scenario:20} {a.family or '':4} {json.dumps(shown, sort_keys=True)}")


def load(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fmt(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def fmt_pct(v):
    return "-" if v is None else f"{v * 100:.0f}%"


def ratio(a, b, digits=2):
    if a is None or b in (None, 0):
        return "-"
    return f"{a / b:.{digits}f}x"


def failures(records):
    bad = []
    for r in records:
        if r.get("na"):
            continue
        if r.get("errors") or r.get("non_2xx") or r.get("failed"):
            bad.append(r)
    return bad


MEASURED = ("1-keepalive", "2-conn-per-request", "3-h2", "7-tls")


def is_ours(proxy):
    return proxy == OURS or proxy.startswith(OURS + " ")


def row_order(r):
    return (not is_ours(r["proxy"]), r["proxy"], r.get("family") or "", r.get("repeat", 1))


def spread(values, digits, unit=""):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    if f"{lo:,.{digits}f}" == f"{hi:,.{digits}f}":
        return f"{lo:,.{digits}f}{unit}"
    return f"{lo:,.{digits}f}–{hi:,.{digits}f}{unit}"


def groups(records):
    """Measured runs grouped by (scenario, proxy, family), ours first, in the order proxies were run."""
    out = {}
    for r in records:
        if r.get("scenario") in MEASURED and "rps" in r:
            out.setdefault((r["scenario"], r["proxy"], r["family"]), []).append(r)
    return out


def summary_rows(records):
    g = groups(records)
    order = {p: i for i, p in enumerate(dict.fromkeys(r["proxy"] for r in records))}
    rows = []
    for (scenario, proxy, family), rs in sorted(
        g.items(), key=lambda kv: (MEASURED.index(kv[0][0]), not is_ours(kv[0][1]), order[kv[0][1]], kv[0][2])
    ):
        rows.append(
            [
                scenario,
                proxy,
                family,
                spread([r.get("user_us_per_req") for r in rs], 1),
                spread([r.get("sys_us_per_req") for r in rs], 1),
                spread([r.get("cpu_us_per_req") for r in rs], 1),
                spread([r.get("p99_ms") for r in rs], 2),
                spread([r.get("rps") for r in rs], 0),
            ]
        )
    return rows


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def chart(records, path):
    """CPU per request (user and kernel stacked, median over repeats) and p99 per proxy, client family and
    scenario, as an SVG (or PNG, by the extension). Returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib is not installed; no chart drawn", file=sys.stderr)
        return False
    g = groups(records)
    scenarios = [s for s in MEASURED if any(k[0] == s for k in g)]
    if not scenarios:
        return False
    proxies = list(dict.fromkeys(r["proxy"] for r in sorted(records, key=row_order) if r.get("scenario") in MEASURED and "rps" in r))
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(10, 3.2 * len(scenarios)), squeeze=False)
    width = 0.38
    for ax, scenario in zip(axes[:, 0], scenarios):
        ax2 = ax.twinx()
        for j, family in enumerate(("ipv4", "ipv6")):
            xs, users, kernels, p99s = [], [], [], []
            for i, proxy in enumerate(proxies):
                rs = g.get((scenario, proxy, family))
                if not rs:
                    continue
                xs.append(i + (j - 0.5) * width)
                user = median([r.get("user_us_per_req") for r in rs])
                kernel = median([r.get("sys_us_per_req") for r in rs])
                if user is None or kernel is None:  # records from before the split: total only
                    user, kernel = median([r.get("cpu_us_per_req") for r in rs]), 0.0
                users.append(user)
                kernels.append(kernel)
                p99s.append(median([r.get("p99_ms") for r in rs]))
            if not xs:
                continue
            hatch = "" if family == "ipv4" else "//"
            ax.bar(xs, users, width, color="#4c72b0", hatch=hatch, edgecolor="white", label=f"user ({family})")
            ax.bar(xs, kernels, width, bottom=users, color="#dd8452", hatch=hatch, edgecolor="white", label=f"kernel ({family})")
            ax2.plot(xs, p99s, "D", color="black" if family == "ipv4" else "#555555", label=f"p99 ({family})")
        ax.set_title(SCENARIOS[scenario])
        ax.set_ylabel("proxy CPU µs per request")
        ax2.set_ylabel("p99 ms")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend
        ax2.set_ylim(0, ax2.get_ylim()[1] * 1.3)
        ax.set_xticks(range(len(proxies)))
        ax.set_xticklabels([p.replace(" --", "\n--") for p in proxies], fontsize=8)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left", ncol=3)
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None} if path.endswith(".svg") else None)
    plt.close(fig)
    return True


def render(records, meta, chart=None):
    out = []
    w = out.append
    mode = meta.get("mode", "full")
    w(f"# Load test results ({mode})")
    w("")
    w(f"- date: {meta.get('date')}")
    w(f"- machine: {meta.get('cpu')} ({meta.get('cores')} cores), {meta.get('memory')}, Linux {meta.get('kernel')}")
    w(f"- network: {meta.get('netns')}")
    w(
        f"- each run: {meta.get('duration')} s of `oha` per scenario and client family; proxy under test pinned "
        f"to CPU {meta.get('proxy_cpu')}, `oha` and the upstream to CPU {meta.get('client_cpu')} (`taskset`); "
        "one worker/thread per proxy (ours: the default runtime, one worker on the pinned core; "
        "`--threads 1` rows: a single-threaded runtime); access logs off"
    )
    if (meta.get("repeat") or 1) > 1:
        w(
            f"- repeats: {meta['repeat']}, interleaved (every selected proxy once per round, in turn), so that the "
            "machine's drift reaches all of them; ranges are the lowest and highest of the repeats"
        )
    if meta.get("note"):
        w(f"- note: {meta['note']}")
    w("- versions: " + ", ".join(f"{k} {v}" for k, v in sorted((meta.get("versions") or {}).items())))
    w("")
    w(
        "`user` and `kernel` are the proxy's `utime` and `stime` (fields 14 and 15 of `/proc/PID/stat`) per request. "
        "`CPU us/req` is the user+system CPU time of the proxy's whole process tree (from `/proc/PID/stat` "
        "before and after the run) divided by the responses; `CPU use` is that CPU time over the wall time "
        "(100% = the proxy's core was saturated; less means the client side, on the other core, was the limit, "
        "or the proxy waited); `other load` is the busy time of the proxy's CPU that was not the proxy's (other "
        "processes, interrupts): anything above a few percent means the figures of that row are disturbed. "
        "`errors` are oha's connection/transport errors (requests cut off by the end of the run are not counted)."
    )
    w("")

    def family_rows(scenario):
        return [r for r in records if r["scenario"] == scenario]

    for scenario in ("1-keepalive", "2-conn-per-request", "3-h2", "7-tls"):
        rows = family_rows(scenario)
        if not rows:
            continue
        w(f"## {SCENARIOS[scenario]}")
        w("")
        params = next((r.get("params") for r in rows if r.get("params")), None)
        if params:
            params = re.sub(r"/tmp/dualstack-loadtest\.[^/ ]+/certs/", "", params)
            w(f"`oha {params}` (and the same against `[::1]` for the ipv6 rows)")
            w("")
        w("| proxy | client | round | req/s | p50 ms | p99 ms | errors | non-2xx | proxy CPU us/req | user us/req | kernel us/req | proxy CPU use | other load on its CPU |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in sorted(rows, key=row_order):
            if r.get("na"):
                w(f"| {r['proxy']} | {r.get('family') or '-'} | | n/a: {r['na']} | | | | | | | | | |")
                continue
            if "rps" not in r:
                w(f"| {r['proxy']} | {r.get('family') or '-'} | {r.get('repeat', 1)} | failed: {r.get('failed')} | | | | | | | | | |")
                continue
            w(
                f"| {r['proxy']} | {r['family']} | {r.get('repeat', 1)} | {fmt(r['rps'])} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} "
                f"| {r['errors']} | {r['non_2xx']} | {fmt(r['cpu_us_per_req'], 1)} | {fmt(r.get('user_us_per_req'), 1)} "
                f"| {fmt(r.get('sys_us_per_req'), 1)} | {fmt_pct(r['cpu_util'])} | {fmt_pct(r.get('other_load'))} |"
            )
        w("")

    summary = summary_rows(records)
    if summary:
        w("## CPU per request and p99, by proxy")
        w("")
        w("Lowest–highest over the repeats (one value when there was one run). Lower is better.")
        w("")
        if chart:
            w(f"![CPU per request (user and kernel stacked) and p99 per proxy and scenario]({chart})")
            w("")
        w("| scenario | proxy | client | user us/req | kernel us/req | total us/req | p99 ms | req/s |")
        w("|---|---|---|---:|---:|---:|---:|---:|")
        for row in summary:
            w("| " + " | ".join(row) + " |")
        w("")

    ratios = ratio_rows(records)
    if ratios:
        w("## Ratios: our proxy divided by each peer")
        w("")
        w(
            "req/s above 1 and CPU per request and p99 below 1 favour our proxy. With repeats, each round's run of "
            "ours is divided by the same round's run of the peer, and the range over the rounds is shown."
        )
        w("")
        w("| ours | peer | scenario | client | req/s | CPU per request | user CPU | kernel CPU | p99 |")
        w("|---|---|---|---|---:|---:|---:|---:|---:|")
        for row in ratios:
            w("| " + " | ".join(row) + " |")
        w("")

    swaps = family_rows("4-hot-swap")
    if swaps:
        w(f"## {SCENARIOS['4-hot-swap']}")
        w("")
        w(
            "The configuration file is rewritten (write a temporary file, then rename) every "
            f"{meta.get('swap_interval_ms', 100)} ms during the run; each write changes the routes. The run without "
            "swaps is scenario 1 of the same proxy."
        )
        w("")
        w("| client | req/s | p99 ms without swaps | p99 ms with swaps | files written | reloads applied | errors | non-2xx |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        base = {r["family"]: r for r in records if r["scenario"] == "1-keepalive" and r["proxy"] == OURS}
        for r in swaps:
            if "rps" not in r:
                w(f"| {r.get('family')} | failed: {r.get('failed')} | | | | | | |")
                continue
            b = base.get(r["family"], {})
            w(
                f"| {r['family']} | {fmt(r['rps'])} | {fmt(b.get('p99_ms'), 2)} | {fmt(r['p99_ms'], 2)} "
                f"| {r.get('swaps_written', '-')} | {r.get('reloads_ok', '-')} | {r['errors']} | {r['non_2xx']} |"
            )
        w("")

    idle = family_rows("5-idle")
    if idle:
        w(f"## {SCENARIOS['5-idle']}")
        w("")
        w(
            "Half of the connections over IPv4, half over IPv6; each sends one request, reads the answer and "
            "stays open. RSS is the sum of VmRSS over the proxy's process tree."
        )
        w("")
        w("| proxy | connections open | still open at the end | RSS before MiB | RSS with idle connections MiB | KiB per connection | failed requests |")
        w("|---|---:|---:|---:|---:|---:|---:|")
        for r in idle:
            if r.get("na"):
                w(f"| {r['proxy']} | n/a: {r['na']} | | | | | |")
                continue
            before, after, n = r.get("rss_before_kb"), r.get("rss_after_kb"), r.get("open") or 0
            per = (after - before) / n if (n and before is not None and after is not None) else None
            w(
                f"| {r['proxy']} | {fmt(n)} | {fmt(r.get('still_open'))} | {fmt(before / 1024 if before else None, 1)} "
                f"| {fmt(after / 1024 if after else None, 1)} | {fmt(per, 1)} | {r.get('failed_requests', '-')} |"
            )
        w("")

    routes = family_rows("6-routes")
    if routes:
        w(f"## {SCENARIOS['6-routes']}")
        w("")
        w("Keep-alive HTTP/1.1 with the same `oha` parameters as scenario 1; the requests name one host rule in the middle of the table.")
        w("")
        w("| client | host rules | req/s | p99 ms | proxy CPU us/req | errors | non-2xx |")
        w("|---|---:|---:|---:|---:|---:|---:|")
        for r in routes:
            if "rps" not in r:
                w(f"| {r.get('family')} | {fmt(r.get('rules'))} | failed: {r.get('failed')} | | | | |")
                continue
            w(
                f"| {r['family']} | {fmt(r.get('rules'))} | {fmt(r['rps'])} | {fmt(r['p99_ms'], 2)} "
                f"| {fmt(r['cpu_us_per_req'], 1)} | {r['errors']} | {r['non_2xx']} |"
            )
        w("")
        by = {}
        for r in routes:
            if "rps" not in r:
                continue
            by.setdefault(r["family"], {})[r.get("rules")] = r
        lines = []
        for fam, rs in by.items():
            if len(rs) == 2:
                small, big = (rs[k] for k in sorted(rs))
                lines.append(
                    f"- {fam}: req/s with {fmt(big.get('rules'))} rules is {ratio(big['rps'], small['rps'])} of "
                    f"{fmt(small.get('rules'))} rules; CPU per request {ratio(big['cpu_us_per_req'], small['cpu_us_per_req'])}"
                )
        out.extend(lines)
        if lines:
            w("")

    bad = failures(records)
    w("## Errors")
    w("")
    if bad:
        for r in bad:
            w(
                f"- {r['proxy']} {r['scenario']} {r.get('family') or ''}: errors {r.get('errors')} "
                f"{r.get('error_kinds', '')} non-2xx {r.get('non_2xx')} {r.get('failed') or ''}"
            )
    else:
        w("None: no connection errors and no non-2xx answers in any run.")
    w("")
    return "\n".join(out)


def ratio_rows(records):
    g = groups(records)
    ours = [p for p in dict.fromkeys(r["proxy"] for r in records) if is_ours(p)]
    peers = [p for p in dict.fromkeys(r["proxy"] for r in records) if not is_ours(p)]
    rows = []
    for o in ours:
        for peer in peers:
            for scenario in MEASURED:
                for family in ("ipv4", "ipv6"):
                    mine = {r.get("repeat", 1): r for r in g.get((scenario, o, family), [])}
                    theirs = {r.get("repeat", 1): r for r in g.get((scenario, peer, family), [])}
                    rounds = sorted(set(mine) & set(theirs))
                    if not rounds:
                        continue

                    def rr(key):
                        vals = []
                        for k in rounds:
                            a, b = mine[k].get(key), theirs[k].get(key)
                            if a is not None and b:
                                vals.append(a / b)
                        return spread(vals, 2, "x")

                    rows.append(
                        [o, peer, scenario, family, rr("rps"), rr("cpu_us_per_req"), rr("user_us_per_req"), rr("sys_us_per_req"), rr("p99_ms")]
                    )
    return rows


def cmd_render(a):
    records = load(a.results)
    with open(a.meta) as f:
        meta = json.load(f)
    drawn = None
    if a.chart and chart(records, a.chart):
        drawn = os.path.relpath(a.chart, os.path.dirname(os.path.abspath(a.out)))
    text = render(records, meta, drawn)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.rename(tmp, a.out)
    rows = ratio_rows(records)
    if rows:
        print("\nRatios, ours / peer (req/s: >1 is better for us; CPU per request and p99: <1 is better for us):")
        for o, peer, scenario, family, rps, cpu, user, kernel, p99 in rows:
            print(
                f"  {o:30} vs {peer:8} {scenario:20} {family:4}  req/s {rps:>11}  CPU/req {cpu:>11}"
                f"  user {user:>11}  kernel {kernel:>11}  p99 {p99:>11}"
            )


def cmd_check(a):
    records = load(a.results)
    bad = failures(records)
    if not records:
        print("check: no results recorded", file=sys.stderr)
        return 1
    for r in bad:
        print(
            f"FAIL: {r['proxy']} {r['scenario']} {r.get('family') or ''}: errors {r.get('errors')} "
            f"{r.get('error_kinds', '')} non-2xx {r.get('non_2xx')} {r.get('failed') or ''}",
            file=sys.stderr,
        )
    ran = len([r for r in records if not r.get("na")])
    print(f"check: {ran - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--results", required=True)
    r.add_argument("--proxy", required=True)
    r.add_argument("--scenario", required=True)
    r.add_argument("--family", required=True)
    r.add_argument("--oha", required=True)
    r.add_argument("--cpu-ticks", type=int, required=True)
    r.add_argument("--cpu-busy-ticks", type=int)
    r.add_argument("--cpu-user-ticks", type=int)
    r.add_argument("--cpu-sys-ticks", type=int)
    r.add_argument("--wall", type=float, required=True)
    r.add_argument("--set", action="append")
    n = sub.add_parser("note")
    n.add_argument("--results", required=True)
    n.add_argument("--proxy", required=True)
    n.add_argument("--scenario", required=True)
    n.add_argument("--family", default="")
    n.add_argument("--set", action="append")
    d = sub.add_parser("render")
    d.add_argument("--results", required=True)
    d.add_argument("--meta", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--chart", help="draw CPU per request and p99 into this SVG/PNG and embed it")
    c = sub.add_parser("check")
    c.add_argument("--results", required=True)
    a = ap.parse_args()
    return {"record": cmd_record, "note": cmd_note, "render": cmd_render, "check": cmd_check}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
