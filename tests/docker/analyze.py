"""What a wrk run through nginx (or straight at one container) saw, and whether it passes.

Used by tests/docker/test_docker.sh and test_swarm.sh (Debian's python3, no modules).

  analyze.py nginx --name N --wrk WRK_LOG --access NGINX_LOG --t0 T --t-end T --conns C
                   [--event LABEL=TIME ...] --expect zero|bounded|failures [--window 1.0]
                   [--require-addr ADDR@TIME ...] [--distinct-after TIME:K]
      The client's count (the "wrk-json" line of bench/post_image.lua) and nginx's
      access log (deploy/nginx.conf's format: $msec, status, upstream list) between
      T0 and T_END.  A failure is a POST /v1/predict that nginx answered with
      anything but 200 (499 in the last 2 s, wrk closing its connections at the
      end, is not one).
        zero      no failure, and no error at the client
        bounded   every failure within WINDOW seconds after an event, at most
                  MAX_PER_EVENT (2 C) per event, none before the first; the client
                  saw no more errors than nginx logged; none after a --clean-event
        failures  at least one failure (a run that shows the test can fail)
      --require-addr: ADDR answered 200 after TIME; --distinct-after: K or more
      addresses answered 200 after TIME.
  analyze.py drain --name N --wrk WRK_LOG --server-log LOG --before N0
      A container stopped under load, wrk straight at it: every prediction the
      server logged (less the N0 logged before wrk) reached the client, and the
      server logged "stopped" with nothing cancelled or unfinished.
Prints REPORT lines; exits 1 (with a FAIL line) when the run does not pass.
"""
import argparse
import json
import re
import sys

LINE = re.compile(r'\] (\d+\.\d+) "POST /v1/predict[^"]*" (\d+) \S+ rt=(\S+) upstream=(\S+(?:, \S+)*) ustatus=')


def wrk_summary(path):
    m = re.search(r"^wrk-json (\{.*\})$", open(path).read(), re.M)
    if not m:
        print("FAIL: no wrk-json line in %s" % path)
        sys.exit(1)
    w = json.loads(m.group(1))
    w["errors"] = w["non2xx"] + w["connect"] + w["read"] + w["write"] + w["timeout"]
    return w


def wrk_report(name, w, conns, extra=""):
    print("REPORT %s: wrk %d connections, %.1f s%s: %d requests, %.0f req/s, p50 %.1f ms, p99 %.1f ms, "
          "max %.0f ms; client errors %d (non-2xx %d, connect %d, read %d, write %d, timeout %d)"
          % (name, conns, w["seconds"], extra, w["requests"], w["rps"], w["p50_ms"], w["p99_ms"], w["max_ms"],
             w["errors"], w["non2xx"], w["connect"], w["read"], w["write"], w["timeout"]))


def nginx(a):
    w = wrk_summary(a.wrk)
    events = []
    for e in a.event:
        label, _, t = e.rpartition("=")
        events.append((float(t), label))
    events.sort()
    ok = abandoned = retried = 0
    failures = []          # (time, status, upstreams)
    served = {}            # address -> [times of its 200s]
    for line in open(a.access, errors="replace"):
        m = LINE.search(line)
        if not m:
            continue
        t, status, ups = float(m.group(1)), int(m.group(2)), m.group(4)
        if t < a.t0 or t > a.t_end:
            continue
        if status == 499 and t > a.t_end - 2.0:
            abandoned += 1
            continue
        if status == 200:
            ok += 1
            retried += ", " in ups
            served.setdefault(ups.split(", ")[-1], []).append(t)
            continue
        failures.append((t, status, ups))
    codes = {}
    for _, s, _ in failures:
        codes[s] = codes.get(s, 0) + 1
    ev = ", ".join("%s at %.1f s" % (label, t - a.t0) for t, label in events)
    wrk_report(a.name, w, a.conns, (", " + ev) if ev else "")
    counts = ", ".join("%s %d" % (addr, len(ts)) for addr, ts in sorted(served.items()))
    print("REPORT %s: nginx: %d answered 200 (%d after a retry on another replica), %d failed %s, "
          "%d unanswered at the end (499); 200s by replica: %s"
          % (a.name, ok, retried, len(failures), json.dumps(codes, sort_keys=True), abandoned, counts))
    problems = []

    def after_event(t):
        prev = [e for e in events if e[0] <= t]
        return (t - prev[-1][0], prev[-1][1]) if prev else (None, None)
    if failures:
        offs = []
        for t, s, ups in failures:
            d, label = after_event(t)
            offs.append("%d %s" % (s, ("%+.2f s after %s" % (d, label)) if label else "%.2f s into the run" % (t - a.t0)))
        shown = offs if len(offs) <= 12 else offs[:6] + ["..."] + offs[-6:]
        print("REPORT %s: failures: %s" % (a.name, "; ".join(shown)))
    if a.expect == "zero":
        if failures or w["errors"]:
            problems.append("%d failed requests in nginx's log, %d errors at the client (expected none)"
                            % (len(failures), w["errors"]))
    elif a.expect == "bounded":
        per = {}
        for t, s, ups in failures:
            d, label = after_event(t)
            if label is None:
                problems.append("a failure (%d) before the first event" % s)
            elif d > a.window:
                problems.append("a failure (%d) %.2f s after %s (bound %.1f s)" % (s, d, label, a.window))
            per[label] = per.get(label, 0) + 1
            if label in a.clean_event:
                problems.append("a failure (%d) %.2f s after %s, which must have none" % (s, d, label))
        for label, n in per.items():
            if n > a.max_per_event:
                problems.append("%d failures after %s, more than %d" % (n, label, a.max_per_event))
        if w["errors"] > len(failures):
            problems.append("the client saw %d errors, nginx logged %d failures" % (w["errors"], len(failures)))
        late = max([after_event(t)[0] or 0 for t, _, _ in failures] or [0])
        print("REPORT %s: %d failed requests, all within %.2f s after the event (bound %.1f s), none later"
              % (a.name, len(failures), late, a.window) if not problems else
              "REPORT %s: %d failed requests, not within the bound" % (a.name, len(failures)))
    elif a.expect == "failures":
        if not failures and not w["errors"]:
            problems.append("no failure at all: this run was meant to show that the test can fail")
    if ok < a.min_ok:
        problems.append("only %d successful requests" % ok)
    for req in a.require_addr:
        addr, _, t = req.rpartition("@")
        if not any(x > float(t) for x in served.get(addr, [])):
            problems.append("%s answered no request after %.1f s" % (addr, float(t) - a.t0))
    if a.distinct_after:
        t, _, k = a.distinct_after.rpartition(":")
        n = sum(1 for ts in served.values() if any(x > float(t) for x in ts))
        print("REPORT %s: %d replicas answered after %.1f s" % (a.name, n, float(t) - a.t0))
        if n < int(k):
            problems.append("only %d replicas answered after %.1f s, expected %s" % (n, float(t) - a.t0, k))
    if problems:
        print("FAIL %s: %s" % (a.name, "; ".join(problems)))
        sys.exit(1)


def drain(a):
    w = wrk_summary(a.wrk)
    predicts, statuses, stopped, draining = 0, {}, None, {}
    for line in open(a.server_log, errors="replace"):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("path") == "/v1/predict" and rec.get("method") == "POST":
            predicts += 1
            statuses[rec["status"]] = statuses.get(rec["status"], 0) + 1
        if rec.get("msg") == "stopped":
            stopped = rec
        if rec.get("msg") == "draining":
            draining = rec
    answered = predicts - a.before
    wrk_report(a.name, w, a.conns, ", docker stop after %.1f s" % a.stop_after)
    print("REPORT %s: the server answered %d predictions (%s), the client received %d; at SIGTERM %s were in "
          "flight; the server then logged %s" % (
              a.name, answered, json.dumps(statuses, sort_keys=True), w["requests"],
              draining.get("inflight", "?"), json.dumps(stopped)))
    problems = []
    if stopped is None:
        problems.append("no \"stopped\" line: the server did not drain")
    elif stopped.get("cancelled") or stopped.get("unfinished") or stopped.get("forced"):
        problems.append("the drain cancelled or left requests: %s" % json.dumps(stopped))
    if answered != w["requests"]:
        problems.append("%d answered by the server, %d received by the client: %d lost"
                        % (answered, w["requests"], answered - w["requests"]))
    if w["timeout"]:
        problems.append("%d client timeouts" % w["timeout"])
    if answered < 100:
        problems.append("only %d requests before and during the stop" % answered)
    if problems:
        print("FAIL %s: %s" % (a.name, "; ".join(problems)))
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    n = sub.add_parser("nginx")
    n.add_argument("--name", required=True)
    n.add_argument("--wrk", required=True)
    n.add_argument("--access", required=True)
    n.add_argument("--t0", type=float, required=True)
    n.add_argument("--t-end", type=float, required=True)
    n.add_argument("--conns", type=int, required=True)
    n.add_argument("--event", action="append", default=[])
    n.add_argument("--expect", choices=("zero", "bounded", "failures"), required=True)
    n.add_argument("--window", type=float, default=1.0)
    n.add_argument("--min-ok", type=int, default=20, help="fewest 200s for a run to count")
    n.add_argument("--max-per-event", type=int, default=0, help="default: twice --conns")
    n.add_argument("--require-addr", action="append", default=[])
    n.add_argument("--clean-event", action="append", default=[], help="bounded: no failure may follow this one")
    n.add_argument("--distinct-after")
    d = sub.add_parser("drain")
    d.add_argument("--name", required=True)
    d.add_argument("--wrk", required=True)
    d.add_argument("--server-log", required=True)
    d.add_argument("--before", type=int, required=True)
    d.add_argument("--conns", type=int, required=True)
    d.add_argument("--stop-after", type=float, required=True)
    a = ap.parse_args()
    if a.mode == "nginx" and not a.max_per_event:
        a.max_per_event = 2 * a.conns
    nginx(a) if a.mode == "nginx" else drain(a)


if __name__ == "__main__":
    main()
