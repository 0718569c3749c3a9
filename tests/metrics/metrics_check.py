#!/usr/bin/env python3
"""End-to-end checks of `kvctl metrics` (ctest metrics.<case>), standard library only.

Stand-in engines (metrics_engine) run under LD_PRELOAD=<shim> on the fake CUDA driver
(LD_LIBRARY_PATH=<fake dir>), each on a segment of this run's own, and hold, release and are
refused memory. Cases:
  cli         the command line: bad --listen values, a port in use, the pages served, a clean
              stop on SIGINT/SIGTERM, and the --once text (parsed strictly, and `promtool check
              metrics` when installed)
  prometheus  a real Prometheus (1 s scrapes, loopback, its own free port) scrapes the exporter;
              the values it stores must equal `kvctl list --json` and the engines' own counters,
              before and after the engines change what they hold, with an abandoned (headerless)
              segment lying in /dev/shm; every expression of the Grafana dashboard must return
              data
  dashboard   every metric the Grafana dashboard names is one the exporter emits (with a process)
Exit 0 pass, 1 fail, 77 skip (prometheus is not installed: scripts/install-deps.sh installs it).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

SKIP = 77
MiB = 1 << 20
BUDGET = 128 * MiB  # room for both engines and their pools; a 200 MiB request is refused
LOOPBACK = "127.0.0.1"
LEDGER_MAGIC = 0x314752444C43564B  # "KVCLDRG1", the first word of every ledger segment


class Failure(Exception):
    pass


class Exited(Failure):
    """A server exited while starting (its port may have been taken meanwhile)."""


def expect(cond, message):
    if not cond:
        raise Failure(message)


def log(message):
    print(message, flush=True)


# ---------------------------------------------------------------- the exposition format

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(r"^(%s)(?:\{(.*)\})? (\S+)$" % NAME)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def unescape(value):
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def parse_exposition(text):
    """[(name, {labels}, value)], checking HELP/TYPE order and the label syntax strictly."""
    samples, helped, typed = [], set(), {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            expect(name not in helped, "second HELP for %s" % name)
            helped.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            expect(name in helped and name not in typed, "TYPE of %s out of place" % name)
            expect(kind in ("gauge", "counter"), "type %r of %s" % (kind, name))
            typed[name] = kind
            continue
        m = SAMPLE.match(line)
        expect(m is not None, "not a sample line: %r" % line)
        name, body, value = m.groups()
        expect(name in typed, "sample of %s before its TYPE" % name)
        labels, pos = {}, 0
        body = body or ""
        while pos < len(body):
            lm = LABEL.match(body, pos)
            expect(lm is not None, "bad labels in %r" % line)
            labels[lm.group(1)] = unescape(lm.group(2))
            pos = lm.end()
        samples.append((name, labels, float(value)))
    return samples, typed


# ---------------------------------------------------------------- processes

def free_port():
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Engine:
    """A metrics_engine under the shim; send() writes one command and returns the reply."""

    def __init__(self, args, segment, label, extra_env=None):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KVCACHED_", "FAKECUDA_")) and k != "LD_PRELOAD"}
        env.update({"LD_PRELOAD": args.shim, "LD_LIBRARY_PATH": args.fake_dir,
                    "KVCACHED_IPC_NAME": segment[len("kvcached_"):], "KVCACHED_LABEL": label,
                    "KVCACHED_BUDGET": "%dM" % (BUDGET // MiB), "KVCACHED_LOG_LEVEL": "error"})
        env.update(extra_env or {})
        self.label = label
        self.proc = subprocess.Popen([args.engine], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        first = self.proc.stdout.readline().split()
        expect(first[:1] == ["ready"], "engine %r did not start: %r" % (label, first))
        self.pid = int(first[1])

    def send(self, line, want="ok"):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().strip()
        expect(reply.startswith(want), "engine %r: %r answered %r, expected %r"
               % (self.label, line, reply, want))
        return reply

    def stats(self):
        return json.loads(self.send("stats")[3:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Exporter:
    """`kvctl metrics --listen 127.0.0.1:0`: the port it chose is read from its first line."""

    def __init__(self, args, listen="%s:0" % LOOPBACK):
        self.proc = subprocess.Popen([args.kvctl, "metrics", "--listen", listen],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"http://(\S+):(\d+)/metrics", line)
        if m is None:
            self.proc.kill()
            raise Failure("kvctl metrics did not say where it listens: %r %r"
                          % (line, self.proc.stderr.read()))
        self.port = int(m.group(2))
        self.url = "http://%s:%d" % (LOOPBACK, self.port)

    def stop(self, sig=signal.SIGTERM):
        """Stops it with `sig`; returns (rc, rest of stdout, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise Failure("kvctl metrics did not stop within 10 s of %s" % sig.name)
        return self.proc.returncode, out, err


def http_get(url, timeout=5):
    """(status, content type, body)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def kvctl(args, *argv, rc=0):
    proc = subprocess.run([args.kvctl, *argv], capture_output=True, text=True, timeout=30)
    expect(proc.returncode == rc, "kvctl %s: exit %d (expected %d)\n%s%s"
           % (" ".join(argv), proc.returncode, rc, proc.stdout, proc.stderr))
    return proc


def segment_json(args, name):
    for seg in json.loads(kvctl(args, "list", "--json").stdout)["segments"]:
        if seg["name"] == name:
            return seg
    raise Failure("kvctl list --json does not show %s" % name)


class Run:
    """This run's segment, engines and processes; close() removes them all."""

    def __init__(self, args, tag):
        self.args = args
        self.segment = "kvcached_test_metrics_%s_%d" % (tag, os.getpid())
        self.tmp = tempfile.mkdtemp(prefix="kvcached-metrics-")
        self.engines, self.procs, self.files = [], [], []

    def engine(self, label, extra_env=None):
        e = Engine(self.args, self.segment, label, extra_env)
        self.engines.append(e)
        return e

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for e in self.engines:
            e.stop()
        if os.path.exists("/dev/shm/" + self.segment):
            subprocess.run([self.args.kvctl, "delete", self.segment, "--force"],
                           capture_output=True, timeout=30)
        for f in self.files:
            if os.path.exists(f):
                os.unlink(f)
        shutil.rmtree(self.tmp, ignore_errors=True)


# A fixed scene: engine A maps every page on its own thread (no map-ahead, no pool) and passes a
# small allocation through; engine B keeps the default pool, is refused and gets a limit.
NO_POOL = {"KVCACHED_MAP_AHEAD_PAGES": "0", "KVCACHED_MAP_AHEAD_BURST_PAGES": "0",
           "KVCACHED_PAGE_PREALLOC_ENABLED": "false"}
LABEL_B = 'engine "b" \\ two'  # exercises the escaping of quotes and backslashes


def start_scene(run):
    a = run.engine("engine-a", NO_POOL)
    a.send("region 256")
    a.send("acquire 0 20")
    a.send("alloc 64")
    b = run.engine(LABEL_B)
    b.send("region 256")
    b.send("acquire 0 16")
    b.send("acquire 16 200", want="refused")
    kvctl(run.args, "limit", str(b.pid), "100M", "--segment", run.segment)
    # Engine a's hook reports its totals (B's never does: its engine_* series stay out).
    a.send("steps %d %d %d" % HOOK_TOTALS[0])
    return a, b


# (steps, hook ns, C calls) engine a reports at the start and after its release.
HOOK_TOTALS = [(100, 2_500_000, 300), (250, 5_000_000_123, 700)]


# ---------------------------------------------------------------- expected values

def expected_series(seg):
    """{(name, frozenset(labels)): value} for everything but heartbeat ages, from kvctl JSON."""
    out = {}
    base = {"segment": seg["name"], "gpu_uuid": seg["gpu_uuid"]}

    def put(name, labels, value):
        out[(name, frozenset(labels.items()))] = float(value)

    put("kvcached_segment_status", dict(base, status=seg["status"]), 1)
    put("kvcached_segment_layout_version", base, seg["layout_version"])
    put("kvcached_segment_gpu_memory_bytes", base, seg["gpu_total_bytes"])
    put("kvcached_segment_budget_bytes", base, seg["budget_bytes"])
    put("kvcached_segment_used_bytes", base, seg["used_bytes"])
    put("kvcached_segment_reserved_bytes", base, seg["reserved_bytes"])
    put("kvcached_segment_free_bytes", base, seg["free_bytes"])
    put("kvcached_segment_slots", base, seg["slots"])
    put("kvcached_segment_pressure_requests_total", base, seg["pressure_requests"])
    put("kvcached_segment_processes", dict(base, state="live"), seg["live_processes"])
    put("kvcached_segment_processes", dict(base, state="dead"), seg["dead_processes"])
    for p in seg["processes"]:
        labels = dict(base, slot=str(p["slot"]), pid=str(p["pid"]), label=p["label"])
        limit = p["limit_bytes"] if p["limit_bytes"] is not None else seg["budget_bytes"]
        put("kvcached_process_alive", labels, 1 if p["state"] == "live" else 0)
        put("kvcached_process_limit_bytes", labels, limit)
        put("kvcached_process_in_use_bytes", labels, p["in_use_bytes"])
        put("kvcached_process_reserved_bytes", labels, p["reserved_bytes"])
        put("kvcached_process_peak_bytes", labels, p["peak_bytes"])
        put("kvcached_process_other_bytes", labels, p["other_bytes"])
        put("kvcached_process_pages_mapped_total", labels, p["pages_mapped"])
        put("kvcached_process_pages_unmapped_total", labels, p["pages_unmapped"])
        put("kvcached_process_sync_maps_total", labels, p["sync_maps"])
        put("kvcached_process_budget_refusals_total", labels, p["budget_refusals"])
        if p["engine_steps"] is not None:  # left out until the engine's hook reports
            put("kvcached_process_engine_steps_total", labels, p["engine_steps"])
            put("kvcached_process_engine_hook_seconds_total", labels, p["engine_hook_ns"] / 1e9)
            put("kvcached_process_engine_hook_c_calls_total", labels, p["engine_hook_c_calls"])
        put("kvcached_process_share_weight", labels, p["weight"])
        put("kvcached_process_share_min_bytes", labels, p["share_min_bytes"])
        put("kvcached_process_fair_share_bytes", labels, p["fair_share_bytes"])
        put("kvcached_process_share_deficit_bytes", labels, p["deficit_bytes"])
        put("kvcached_process_share_given_bytes_total", labels, p["share_given_bytes"])
        put("kvcached_process_share_preemptions_total", labels, p["share_preempted_requests"])
    return out


def check_engine_counters(seg, engines):
    """The counters in the ledger are the engines' own (kvcached_stats_get)."""
    for e in engines:
        mine = [p for p in seg["processes"] if p["pid"] == e.pid]
        expect(len(mine) == 1, "pid %d not in %s" % (e.pid, seg["name"]))
        s, p = e.stats(), mine[0]
        got = {"maps": p["pages_mapped"], "unmaps": p["pages_unmapped"],
               "sync_maps": p["sync_maps"], "budget_refusals": p["budget_refusals"]}
        if got != s:
            return "%s: ledger %s, engine %s" % (e.label, got, s)
    return None


# ---------------------------------------------------------------- cases

def case_cli(args):
    # Bad values: usage errors naming the value and an example.
    for bad in ("9400", "localhost:http", "127.0.0.1:70000", "::1:9400", ":9400"):
        proc = kvctl(args, "metrics", "--listen", bad, rc=2)
        expect("'%s'" % bad in proc.stderr and "127.0.0.1:9400" in proc.stderr,
               "--listen %s: unclear message %r" % (bad, proc.stderr))
    proc = kvctl(args, "metrics", "--listen", "no-such-host.invalid:9400", rc=1)
    expect("cannot resolve" in proc.stderr, "unresolvable host: %r" % proc.stderr)

    # A port in use, by anything and by another exporter.
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        s.listen(1)
        busy = s.getsockname()[1]
        proc = kvctl(args, "metrics", "--listen", "%s:%d" % (LOOPBACK, busy), rc=1)
        expect("%s:%d is already in use" % (LOOPBACK, busy) in proc.stderr,
               "port in use: %r" % proc.stderr)
    run = Run(args, "cli")
    try:
        first = Exporter(args)
        run.procs.append(first.proc)
        second = subprocess.run([args.kvctl, "metrics", "--listen", "%s:%d" % (LOOPBACK, first.port)],
                                capture_output=True, text=True, timeout=10)
        expect(second.returncode == 1 and "already in use" in second.stderr,
               "a second exporter on the same port: exit %d %r"
               % (second.returncode, second.stderr))

        # The pages.
        status, ctype, body = http_get(first.url + "/")
        expect(status == 200 and ctype.startswith("text/html") and 'href="/metrics"' in body,
               "GET /: %d %s %r" % (status, ctype, body[:200]))
        status, ctype, body = http_get(first.url + "/metrics")
        expect(status == 200 and ctype == "text/plain; version=0.0.4; charset=utf-8",
               "GET /metrics: %d %r" % (status, ctype))
        parse_exposition(body)
        status, _, _ = http_get(first.url + "/nothing-here")
        expect(status == 404, "GET /nothing-here: %d" % status)

        # Live values: an engine attaches and is served without restarting the exporter.
        a, b = start_scene(run)
        deadline = time.time() + 10  # the counters are published every 20 ms: allow for load
        while True:
            samples, _ = parse_exposition(http_get(first.url + "/metrics")[2])
            mine = {(n, l.get("label")): v for n, l, v in samples
                    if l.get("segment") == run.segment}
            if mine.get(("kvcached_process_budget_refusals_total", LABEL_B), 0) >= 1:
                break
            expect(time.time() < deadline,
                   "engine b's refusal is not counted: %s" % sorted(mine.items()))
            time.sleep(0.1)
        expect(mine.get(("kvcached_process_in_use_bytes", "engine-a")) == 20 * MiB,
               "engine-a in use: %s" % mine.get(("kvcached_process_in_use_bytes", "engine-a")))

        rc, out, err = first.stop(signal.SIGINT)
        expect(rc == 0 and "stopped (SIGINT)" in out, "SIGINT: exit %d %r %r" % (rc, out, err))
        again = Exporter(args)
        run.procs.append(again.proc)
        rc, out, err = again.stop(signal.SIGTERM)
        expect(rc == 0 and "stopped (SIGTERM)" in out, "SIGTERM: exit %d %r %r" % (rc, out, err))

        # --once: the same text, strictly parsed; promtool lints the names when it is installed.
        text = kvctl(args, "metrics", "--once").stdout
        samples, typed = parse_exposition(text)
        expect(any(l.get("label") == LABEL_B for _, l, _ in samples),
               "--once lacks the engine labelled %r" % LABEL_B)
        promtool = shutil.which("promtool")
        if promtool:
            lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                                  text=True, timeout=30)
            expect(lint.returncode == 0, "promtool check metrics:\n%s%s" % (lint.stdout, lint.stderr))
            log("promtool check metrics: clean (%d families)" % len(typed))
        else:
            log("note: promtool not installed, the names were not linted")
    finally:
        run.close()


class Prometheus:
    def __init__(self, run, target_port):
        # Its port is picked free and then bound by Prometheus: another process may take it in
        # between on a busy machine, so a start that fails is retried on another port.
        for attempt in range(3):
            try:
                self.start(run, target_port, attempt)
                return
            except Exited:
                if attempt == 2:
                    raise

    def start(self, run, target_port, attempt):
        binary = shutil.which("prometheus")
        self.port = free_port()
        config = os.path.join(run.tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: kvcached\n    static_configs:\n"
                    "      - targets: ['%s:%d']\n" % (LOOPBACK, target_port))
        self.log = open(os.path.join(run.tmp, "prometheus%d.log" % attempt), "w")
        self.proc = subprocess.Popen(
            [binary, "--config.file=" + config,
             "--storage.tsdb.path=" + os.path.join(run.tmp, "data%d" % attempt),
             "--web.listen-address=%s:%d" % (LOOPBACK, self.port), "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=run.tmp)
        run.procs.append(self.proc)
        self.url = "http://%s:%d" % (LOOPBACK, self.port)
        self.logpath = self.log.name
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Exited("prometheus exited: %s" % self.tail())
            try:
                if http_get(self.url + "/-/ready", timeout=1)[0] == 200:
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise Failure("prometheus was not ready within 20 s: %s" % self.tail())

    def tail(self):
        self.log.flush()
        with open(self.logpath) as f:
            return f.read()[-2000:]

    def query(self, expr):
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, _, body = http_get(url)
        reply = json.loads(body)
        expect(status == 200 and reply.get("status") == "success",
               "query %r: %d %s" % (expr, status, body[:500]))
        return reply["data"]["result"]

    def label_values(self, label, match):
        url = "%s/api/v1/label/%s/values?%s" % (self.url, label,
                                                urllib.parse.urlencode({"match[]": match}))
        status, _, body = http_get(url)
        reply = json.loads(body)
        expect(status == 200 and reply.get("status") == "success",
               "label values %s of %s: %d %s" % (label, match, status, body[:500]))
        return reply["data"]

    def series(self, segment):
        out = {}
        for r in self.query('{__name__=~"kvcached_.+",segment="%s"}' % segment):
            labels = dict(r["metric"])
            name = labels.pop("__name__")
            labels.pop("job", None)
            labels.pop("instance", None)
            out[(name, frozenset(labels.items()))] = float(r["value"][1])
        return out


def wait_until_prometheus_matches(prom, run, engines, phase, timeout=25):
    """Polls until Prometheus' latest values equal `kvctl list --json` (and the engines' own
    counters); returns (kvctl segment, Prometheus series)."""
    deadline, why = time.time() + timeout, "nothing compared yet"
    while time.time() < deadline:
        seg = segment_json(run.args, run.segment)
        want = expected_series(seg)
        got = prom.series(run.segment)
        ages = {k: v for k, v in got.items() if k[0] == "kvcached_process_heartbeat_age_seconds"}
        got_rest = {k: v for k, v in got.items() if k not in ages}
        missing = {k: v for k, v in want.items() if got_rest.get(k) != v}
        extra = set(got_rest) - set(want)
        why = check_engine_counters(seg, engines)
        if not missing and not extra and why is None:
            expect(len(ages) == len(seg["processes"]) and all(0 <= v < 10 for v in ages.values()),
                   "%s: heartbeat ages %s" % (phase, ages))
            log("%s: Prometheus matches kvctl list --json (%d series)" % (phase, len(want)))
            return seg, got
        if missing or extra:
            why = "differ: %s; extra %s" % (
                ["%s%s want %s got %s" % (k[0], dict(k[1]), v, got_rest.get(k))
                 for k, v in sorted(missing.items(), key=str)][:6], sorted(extra, key=str)[:3])
        time.sleep(0.5)
    raise Failure("%s: Prometheus never matched kvctl within %d s: %s" % (phase, timeout, why))


def value_of(series, name, label):
    return [v for (n, l), v in series.items() if n == name and ("label", label) in l]


def dashboard_queries(path):
    """[(where, PromQL)] of every panel target and templating query of the dashboard."""
    with open(path) as f:
        dash = json.load(f)
    out = []
    for panel in dash["panels"]:
        targets = panel.get("targets", [])
        expect(targets, "panel %r has no query" % panel.get("title"))
        for t in targets:
            out.append(("panel %r" % panel["title"], t["expr"]))
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if var.get("type") == "query":
            out.append(("variable %r" % var["name"], q))
    return out


KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan"}


def metric_names(expr):
    """Metric names a PromQL expression reads (label_values(NAME, ...) included)."""
    m = re.fullmatch(r"\s*label_values\(\s*(%s)\s*,.*\)\s*" % NAME, expr)
    if m:
        return {m.group(1)}
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # strings
    e = re.sub(r"\{[^}]*\}", " ", e)                          # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                         # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for t in re.finditer(NAME, e):
        if e[t.end():].lstrip().startswith("("):              # a function or aggregation
            continue
        if t.group(0).lower() in KEYWORDS or (t.start() > 0 and e[t.start() - 1] in "$0123456789."):
            continue
        names.add(t.group(0))
    return names


def case_dashboard(args):
    queries = dashboard_queries(args.dashboard)
    named = set()
    for where, expr in queries:
        names = metric_names(expr)
        expect(names, "%s: no metric found in %r" % (where, expr))
        named |= names
    run = Run(args, "dash")
    try:
        start_scene(run)
        samples, typed = parse_exposition(kvctl(args, "metrics", "--once").stdout)
        emitted = {n for n, l, _ in samples if l.get("segment") == run.segment}
        unknown = sorted(named - emitted)
        expect(not unknown, "the dashboard names metrics the exporter does not emit: %s "
               "(emitted: %s)" % (unknown, sorted(emitted)))
        log("dashboard: %d queries name %d metrics, all emitted (%d families exported)"
            % (len(queries), len(named), len(typed)))
    finally:
        run.close()


def substitute(expr, segment):
    return expr.replace("$segment", segment).replace("$__rate_interval", "10s")


def case_prometheus(args):
    if shutil.which("prometheus") is None:
        print("SKIP: the prometheus binary is not installed (Debian package `prometheus`; "
              "scripts/install-deps.sh installs it)")
        return SKIP
    run = Run(args, "prom")
    try:
        started = time.time()
        # A segment whose creator died before writing its header lies in /dev/shm too: the
        # scrapes must not wait for it (Segment::Open would give it 1 s, the scrape timeout).
        abandoned = "/dev/shm/kvcached_test_metrics_abandoned_%d" % os.getpid()
        open(abandoned, "w").close()
        run.files.append(abandoned)
        os.utime(abandoned, (time.time() - 60, time.time() - 60))
        # ...and one made by another kvcached release (layout version 3): other_version, not corrupt.
        older = "/dev/shm/kvcached_test_metrics_layout3_%d" % os.getpid()
        with open(older, "wb") as f:
            f.write(struct.pack("<QI", LEDGER_MAGIC, 3).ljust(256 + 64 * 256, b"\0"))
        run.files.append(older)
        exporter = Exporter(args)
        run.procs.append(exporter.proc)
        prom = Prometheus(run, exporter.port)
        log("prometheus %s scrapes %s every 1 s" % (prom.url, exporter.url))
        a, b = start_scene(run)
        _, before = wait_until_prometheus_matches(prom, run, [a, b], "holding")
        expect(value_of(before, "kvcached_process_sync_maps_total", "engine-a") == [10],
               "engine-a mapped 10 pages on its own thread: %s"
               % value_of(before, "kvcached_process_sync_maps_total", "engine-a"))
        expect(value_of(before, "kvcached_process_limit_bytes", LABEL_B) == [100 * MiB],
               "engine b's limit: %s" % value_of(before, "kvcached_process_limit_bytes", LABEL_B))

        # The engines give memory back: the new values must reach Prometheus too.
        a.send("release 0 20")
        a.send("trim")
        b.send("release 0 8")
        a.send("steps %d %d %d" % HOOK_TOTALS[1])
        _, after = wait_until_prometheus_matches(prom, run, [a, b], "released")
        for i, (name, scale) in enumerate((("kvcached_process_engine_steps_total", 1),
                                           ("kvcached_process_engine_hook_seconds_total", 1e9),
                                           ("kvcached_process_engine_hook_c_calls_total", 1))):
            expect(value_of(before, name, "engine-a") == [HOOK_TOTALS[0][i] / scale]
                   and value_of(after, name, "engine-a") == [HOOK_TOTALS[1][i] / scale]
                   and value_of(after, name, LABEL_B) == [],
                   "%s: before %s, after %s (engine b never reported: %s)"
                   % (name, value_of(before, name, "engine-a"), value_of(after, name, "engine-a"),
                      value_of(after, name, LABEL_B)))
        expect(value_of(before, "kvcached_process_in_use_bytes", "engine-a") == [20 * MiB]
               and value_of(after, "kvcached_process_in_use_bytes", "engine-a") == [0]
               and value_of(after, "kvcached_process_pages_unmapped_total", "engine-a") == [10],
               "engine-a's release did not show: before %s, after %s"
               % (value_of(before, "kvcached_process_in_use_bytes", "engine-a"),
                  value_of(after, "kvcached_process_in_use_bytes", "engine-a")))

        # Every dashboard expression resolves to data in this Prometheus (rates need two
        # scrapes inside their 10 s window: there are several by now).
        for where, expr in dashboard_queries(args.dashboard):
            # label_values(METRIC, LABEL) is Grafana's: it asks Prometheus' label API.
            m = re.fullmatch(r"\s*label_values\(\s*(%s)\s*,\s*(%s)\s*\)\s*" % (NAME, NAME), expr)
            if m:
                values = prom.label_values(m.group(2), m.group(1))
                expect(run.segment in values, "%s: %r lacks %s: %s"
                       % (where, expr, run.segment, values))
                continue
            result = prom.query(substitute(expr, run.segment))
            expect(result, "%s: %r returns no data" % (where, substitute(expr, run.segment)))
        log("dashboard: every expression returns data")
        status = prom.query('kvcached_segment_status{segment="%s"}' % os.path.basename(abandoned))
        expect([r["metric"].get("status") for r in status] == ["corrupt"],
               "the abandoned segment's status: %s" % status)
        name = os.path.basename(older)
        status = prom.query('kvcached_segment_status{segment="%s"}' % name)
        version = prom.query('kvcached_segment_layout_version{segment="%s"}' % name)
        expect([r["metric"].get("status") for r in status] == ["other_version"]
               and [r["value"][1] for r in version] == ["3"],
               "the layout-3 segment: status %s, version %s" % (status, version))
        log("prometheus case took %.1f s" % (time.time() - started))
    finally:
        run.close()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kvctl", required=True)
    ap.add_argument("--shim", required=True)
    ap.add_argument("--fake-dir", required=True)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("case", choices=["cli", "dashboard", "prometheus"])
    args = ap.parse_args()
    for path in (args.kvctl, args.shim, args.engine, args.dashboard):
        if not os.path.exists(path):
            print("FAIL: %s does not exist (build first: scripts/build.sh)" % path)
            return 1
    try:
        rc = {"cli": case_cli, "dashboard": case_dashboard, "prometheus": case_prometheus}[
            args.case](args)
    except Failure as e:
        print("FAIL: %s" % e)
        return 1
    if rc == SKIP:
        return SKIP
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
