"""The query suite: Honeycomb-style questions asked of Sonde (HTTP API) and of DuckDB (SQL).

Each question is written once, as Sonde's request (a query spec, a raw-events request, a trace
id or a BubbleUp request). The DuckDB side is *derived* from that request by the small
translator below, so both engines answer the same question by construction, with Sonde's
documented semantics spelled out in SQL:

- COUNT is the sum of sample rates; SUM and AVG weight each value by its sample rate;
  percentiles are the weighted nearest-rank percentile of `sonde-query/src/udaf.rs` (the first
  value whose cumulative weight reaches p x total weight), written as a window function because
  DuckDB has no weighted quantile; MIN, MAX and COUNT_DISTINCT are not corrected. Where every
  sample rate is 1, DuckDB's built-in `quantile_disc` gives the same answer (it is the
  nearest-rank percentile) and is much faster, so the harness uses it there (`builtin_quantile`);
  over sampled data it is only timed beside the weighted form, as it is not the same answer.
- Time buckets are integer offsets from the range start: (ts - start) // granularity.
- Results are ordered by the requested orders (default: the first plain calculation,
  descending), then by the breakdowns ascending, nulls last, and limited; the series covers
  only the groups that made the cut, as Sonde's does.
- HEATMAP: 50 value buckets of width (max - min) / 50 over the filtered events, clamped.
- `disable_series`: the results only, no series statement.

The SQL runs against a relation `src` with Sonde's flattened column names (`"http.route"`),
which is either a view over the Parquet segments or over the native table (see run.py).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

# --- the questions -------------------------------------------------------------------------

HEATMAP_BUCKETS = 50  # sonde-query spec::HEATMAP_BUCKETS
BUBBLE_BUCKETS = 20  # sonde-query bubbleup::NUMERIC_BUCKETS
BUBBLE_MAX_DISTINCT = 10_000  # sonde-query bubbleup::MAX_DISTINCT
BUBBLE_TOP = 10  # sonde-query bubbleup::DEFAULT_TOP_VALUES


def questions(t0: int, span_s: int, trace_id: str) -> list[dict]:
    """The suite, for data generated over [t0, t0 + span_s) (epoch seconds).

    Every time range is absolute, so Sonde and DuckDB look at exactly the same rows. The
    generator's incident runs from 60% to 75% of the span (crates/sonde-gen). The granularities
    are for an hour and scale with the span (x24 over the 24 hours of `huge`), so each graph
    keeps its number of points (and stays under Sonde's 1,000 buckets); the last-15-minutes
    question stays 15 minutes.
    """
    full = {"start_time": t0, "end_time": t0 + span_s}
    at = lambda f: t0 + int(span_s * f)  # noqa: E731 - a point at a fraction of the span
    g = lambda s: max(1, s * span_s // 3600)  # noqa: E731 - a granularity for the hour, scaled
    incident = {"start_time": at(0.60), "end_time": at(0.75)}
    last15 = {"start_time": t0 + span_s - 900, "end_time": t0 + span_s}
    spec = lambda **kw: {"kind": "query", "spec": kw}  # noqa: E731
    qs = [
        dict(name="count_by_service_over_time", **spec(
            calculations=[{"op": "COUNT"}], breakdowns=["service.name"], granularity=g(60), **full)),
        dict(name="p99_by_route", **spec(
            calculations=[{"op": "P99", "column": "duration_ms"}], breakdowns=["http.route"],
            granularity=g(300), **full)),
        dict(name="heatmap_duration", **spec(
            calculations=[{"op": "COUNT"}, {"op": "HEATMAP", "column": "duration_ms"}],
            granularity=g(60), **full)),
        dict(name="errors_by_dns_in_incident", **spec(
            calculations=[{"op": "COUNT"}], filters=[{"column": "error", "op": "=", "value": True}],
            breakdowns=["dns.provider"], granularity=g(10), **incident)),
        dict(name="percentiles_by_dns_over_time", **spec(
            calculations=[{"op": "P50", "column": "duration_ms"}, {"op": "P90", "column": "duration_ms"},
                          {"op": "P99", "column": "duration_ms"}],
            breakdowns=["dns.provider"], granularity=g(30),
            start_time=at(0.5), end_time=at(0.85))),
        dict(name="count_distinct_users_by_plan", **spec(
            calculations=[{"op": "COUNT_DISTINCT", "column": "user.id"}], breakdowns=["user.plan"],
            granularity=g(300), **full)),
        dict(name="last_15m_service_region", **spec(
            calculations=[{"op": "COUNT"}, {"op": "AVG", "column": "duration_ms"}],
            breakdowns=["service.name", "cloud.region"], granularity=30, **last15)),
        dict(name="avg_max_having", **spec(
            calculations=[{"op": "AVG", "column": "duration_ms"}, {"op": "MAX", "column": "duration_ms"}],
            breakdowns=["host.name"], havings=[{"calculate_op": "AVG", "column": "duration_ms", "op": ">", "value": 100}],
            orders=[{"op": "AVG", "column": "duration_ms", "order": "descending"}], granularity=g(300), **full)),
        dict(name="contains_filter", **spec(
            calculations=[{"op": "COUNT"}, {"op": "P50", "column": "duration_ms"}],
            filters=[{"column": "name", "op": "contains", "value": "cart"}],
            breakdowns=["service.name"], granularity=g(300), **full)),
        dict(name="top10_users", **spec(
            calculations=[{"op": "COUNT"}], breakdowns=["user.id"], limit=10, granularity=g(300), **full)),
        dict(name="status_5xx_by_service_route", **spec(
            calculations=[{"op": "COUNT"}, {"op": "P95", "column": "duration_ms"}],
            filters=[{"column": "http.status_code", "op": "in", "value": [500, 503]}],
            breakdowns=["service.name", "http.route"], granularity=g(60), **full)),
        dict(name="sum_bytes_non_get_by_region", **spec(
            calculations=[{"op": "SUM", "column": "http.response.bytes"}, {"op": "AVG", "column": "db.duration_ms"},
                          {"op": "MIN", "column": "db.duration_ms"}],
            filters=[{"column": "http.method", "op": "!=", "value": "GET"}],
            breakdowns=["cloud.region"], granularity=g(300), **full)),
        dict(name="trace_lookup", kind="trace", trace_id=trace_id),
        dict(name="raw_events_filtered", kind="events", request={
            "filters": [{"column": "service.name", "op": "=", "value": "payments"},
                        {"column": "http.status_code", "op": ">=", "value": 500}],
            "limit": 50, **full}),
        # "exact": past --bubbleup-sample-rows (1M) rows Sonde would sample the baseline, and
        # DuckDB's answer counts every row: from `full` on they would not compare.
        dict(name="bubbleup_incident", kind="bubbleup", request={
            **full, "filters": [], "exact": True,
            "selection": {"heatmap": {"column": "duration_ms", "start_time": at(0.60), "end_time": at(0.75),
                                      "min": 1800, "max": 10000}}}),
    ]
    # The same BubbleUp as Sonde answers it by default: past --bubbleup-sample-rows rows, from
    # a sample of the baseline (below, the same exact answer). Checked by its sizes and its
    # first five columns against DuckDB's exact answer.
    qs.append(dict(name="bubbleup_incident.sampled", kind="bubbleup", sampled=True,
                   request={k: v for k, v in qs[-1]["request"].items() if k != "exact"}))
    # Every breakdown question once more, results only (`disable_series`): what a trigger, an
    # SLO or a script asks, with no graph to draw. `of` names the question it comes from.
    qs += [dict(name=f"{q['name']}.results_only", of=q["name"], kind="query",
                spec={**q["spec"], "disable_series": True})
           for q in qs if q["kind"] == "query" and q["spec"].get("breakdowns")]
    if span_s >= 86_400:
        qs += day_views(t0, span_s)
    return qs


# The views an on-call engineer opens first over a day of events (issue 17's list for the
# 100M-event run), by name; with the trace lookup, what `--size huge` runs by default.
HUGE_VIEWS = ["view.count_by_service_last_hour", "view.count_by_service_day", "view.p99_by_service_last_hour",
              "view.p99_by_service_day", "view.heatmap_last_hour", "view.bubbleup_last_hour_box",
              "trace_lookup", "view.newest_50_matching"]


def day_views(t0: int, span_s: int) -> list[dict]:
    """The first views of an on-call engineer over data spanning a day: COUNT and P99 by
    service over the last hour and the whole day, the last hour's heatmap, BubbleUp of a box in
    it, and the 50 newest events matching a filter (with `trace_lookup`, the issue's list)."""
    day = {"start_time": t0, "end_time": t0 + span_s}
    hour = {"start_time": t0 + span_s - 3600, "end_time": t0 + span_s}
    spec = lambda **kw: {"kind": "query", "spec": kw}  # noqa: E731
    count = {"op": "COUNT"}
    p99 = {"op": "P99", "column": "duration_ms"}
    return [
        dict(name="view.count_by_service_last_hour", **spec(
            calculations=[count], breakdowns=["service.name"], granularity=60, **hour)),
        dict(name="view.count_by_service_day", **spec(
            calculations=[count], breakdowns=["service.name"], granularity=300, **day)),
        dict(name="view.p99_by_service_last_hour", **spec(
            calculations=[count, p99], breakdowns=["service.name"], granularity=60, **hour)),
        dict(name="view.p99_by_service_day", **spec(
            calculations=[count, p99], breakdowns=["service.name"], granularity=300, **day)),
        dict(name="view.heatmap_last_hour", **spec(
            calculations=[count, {"op": "HEATMAP", "column": "duration_ms"}], granularity=60, **hour)),
        # Sonde's default BubbleUp (sampled past --bubbleup-sample-rows), checked by its sizes
        # and first five columns against DuckDB's exact answer.
        dict(name="view.bubbleup_last_hour_box", kind="bubbleup", sampled=True, request={
            **hour, "filters": [],
            "selection": {"heatmap": {"column": "duration_ms", "start_time": t0 + span_s - 1800,
                                      "end_time": t0 + span_s - 600, "min": 500, "max": 10000}}}),
        dict(name="view.newest_50_matching", kind="events", request={
            "filters": [{"column": "service.name", "op": "=", "value": "payments"},
                        {"column": "http.status_code", "op": ">=", "value": 500}],
            "limit": 50, **day}),
    ]


# --- SQL helpers ---------------------------------------------------------------------------

def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def lit(v) -> str:
    """A SQL literal. Floats go through a string cast: a bare 0.99 is a DECIMAL in DuckDB,
    and the string parse rounds exactly like Rust's, so both sides compute with the same double."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"'{v!r}'::DOUBLE"
    return "'" + str(v).replace("'", "''") + "'"


def ts_lit(epoch_s) -> str:
    return f"TIMESTAMPTZ '{datetime.fromtimestamp(epoch_s, timezone.utc).isoformat()}'"


def to_us(v) -> int:
    """Epoch seconds (int/float) or RFC3339 text to microseconds."""
    if isinstance(v, (int, float)):
        return int(round(v * 1_000_000))
    s = v.replace("Z", "+00:00")
    if "." in s:  # Python wants at most 6 fractional digits
        head, rest = s.split(".", 1)
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        s = head + "." + (rest[:i] + "000000")[:6] + rest[i:]
    dt = datetime.fromisoformat(s)
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def filter_sql(f: dict) -> str:
    c, op, v = ident(f["column"]), f["op"], f.get("value")
    pos = {
        "=": lambda: f"{c} = {lit(v)}", "!=": lambda: f"{c} = {lit(v)}",
        ">": lambda: f"{c} > {lit(v)}", ">=": lambda: f"{c} >= {lit(v)}",
        "<": lambda: f"{c} < {lit(v)}", "<=": lambda: f"{c} <= {lit(v)}",
        "contains": lambda: f"contains({c}, {lit(v)})", "does-not-contain": lambda: f"contains({c}, {lit(v)})",
        "starts-with": lambda: f"starts_with({c}, {lit(v)})", "does-not-start-with": lambda: f"starts_with({c}, {lit(v)})",
        "ends-with": lambda: f"suffix({c}, {lit(v)})", "does-not-end-with": lambda: f"suffix({c}, {lit(v)})",
        "in": lambda: f"{c} IN ({', '.join(lit(x) for x in v or [])})",
        "not-in": lambda: f"{c} IN ({', '.join(lit(x) for x in v or [])})",
        "exists": lambda: f"{c} IS NOT NULL",
    }
    if op == "does-not-exist":
        return f"{c} IS NULL"
    expr = pos[op]()
    # Sonde's negations also match events that lack the field.
    if op in ("!=", "does-not-contain", "does-not-start-with", "does-not-end-with", "not-in"):
        return f"({c} IS NULL OR NOT ({expr}))"
    return expr


def where_sql(req: dict) -> str:
    parts = [f"timestamp >= {ts_lit(req['start_time'])}", f"timestamp < {ts_lit(req['end_time'])}"]
    fs = [filter_sql(f) for f in req.get("filters", [])]
    if fs:
        joiner = " OR " if (req.get("filter_combination") or "AND").upper() == "OR" else " AND "
        parts.append("(" + joiner.join(fs) + ")")
    return " AND ".join(parts)


def calc_key(c: dict) -> str:
    return c["op"] if c["op"] in ("COUNT", "CONCURRENCY") else f"{c['op']}({c['column']})"


PCT = {"P001": 0.001, "P01": 0.01, "P05": 0.05, "P10": 0.10, "P20": 0.20, "P25": 0.25, "P50": 0.50,
       "P75": 0.75, "P80": 0.80, "P90": 0.90, "P95": 0.95, "P99": 0.99, "P999": 0.999}


def has_percentile(spec: dict) -> bool:
    return any(c["op"] in PCT for c in spec.get("calculations") or [])


def plain_agg(c: dict) -> str:
    op, col = c["op"], ident(c.get("column") or "")
    return {
        "COUNT": "sum(samplerate)",
        "SUM": f"sum({col} * samplerate)",
        "AVG": f"sum({col}::DOUBLE * samplerate::DOUBLE) / sum(CASE WHEN {col} IS NOT NULL THEN samplerate END)::DOUBLE",
        "MIN": f"min({col})",
        "MAX": f"max({col})",
        "COUNT_DISTINCT": f"count(DISTINCT {col})",
    }[op]


def group_restriction(bds: list[str], groups: list[tuple]) -> str:
    """Sonde's group filter for the later queries: only the groups in the results."""
    ors = []
    for g in groups:
        ands = [f"{ident(b)} IS NULL" if v is None else f"{ident(b)} = {lit(v)}" for b, v in zip(bds, g)]
        ors.append("(" + " AND ".join(ands) + ")")
    return "(" + " OR ".join(ors) + ")"


class SpecSQL:
    """The SQL statements that answer one query spec the way Sonde does.

    With `builtin_quantile`, percentiles are DuckDB's `quantile_disc` (all of a column's
    percentiles from one list-valued call, one sort instead of one per percentile) rather than
    the weighted window function: the nearest-rank percentile unweighted, so Sonde's answer only
    where every sample rate is 1."""

    def __init__(self, spec: dict, builtin_quantile: bool = False):
        self.spec = spec
        self.builtin_quantile = builtin_quantile
        self.calcs = []
        for c in spec.get("calculations") or [{"op": "COUNT"}]:
            if calc_key(c) not in [calc_key(x) for x in self.calcs]:
                self.calcs.append(c)
        self.bds = list(dict.fromkeys(spec.get("breakdowns", [])))
        self.start_us = to_us(spec["start_time"])
        self.g_us = spec["granularity"] * 1_000_000
        self.where = where_sql(spec)
        self.simple = [c for c in self.calcs if c["op"] != "HEATMAP"]

    def _aggregate(self, extra_keys: list[tuple[str, str]], restrict: str | None) -> str:
        """Plain aggregates (and weighted percentiles, joined in) per group of keys."""
        where = self.where + (f" AND {restrict}" if restrict else "")
        keys = extra_keys + [(ident(b), f"b{i}") for i, b in enumerate(self.bds)]
        key_sel = ", ".join(f"{e} AS {a}" for e, a in keys)
        aggs = ["sum(samplerate) AS __n"]
        pcts = []
        for i, c in enumerate(self.simple):
            if c["op"] in PCT:
                pcts.append((i, c))
            else:
                aggs.append(f"{plain_agg(c)} AS c{i}")
        group = " GROUP BY ALL" if keys else ""
        if pcts and self.builtin_quantile:
            # quantile_disc(v, [p1, p2, ...]) per column, then each percentile taken out of its list.
            by_col: dict[str, list] = {}
            for i, c in pcts:
                by_col.setdefault(c["column"], []).append(i)
            lists, picks = [], []
            for j, (col, idxs) in enumerate(by_col.items()):
                ps = ", ".join(lit(float(PCT[self.simple[i]["op"]])) for i in idxs)
                aggs.append(f"quantile_disc({ident(col)}::DOUBLE, [{ps}]) AS q{j}")
                lists.append(f"q{j}")
                picks += [f"q{j}[{k + 1}] AS c{i}" for k, i in enumerate(idxs)]
            sel = ", ".join(([key_sel] if keys else []) + aggs)
            main = f"SELECT {sel} FROM src WHERE {where}{group} HAVING sum(samplerate) IS NOT NULL"
            return f"SELECT * EXCLUDE ({', '.join(lists)}), {', '.join(picks)} FROM ({main})"
        sel = ", ".join(([key_sel] if keys else []) + aggs)
        main = f"SELECT {sel} FROM src WHERE {where}{group} HAVING sum(samplerate) IS NOT NULL"
        if not pcts:
            return main
        # Weighted nearest-rank percentile: the smallest value whose running weight reaches p*W.
        joins, cols = [], []
        aliases = [a for _, a in keys]
        part = ", ".join(e for e, _ in keys)
        over = f"PARTITION BY {part}" if keys else ""
        for i, c in pcts:
            col = ident(c["column"])
            p = lit(float(PCT[c["op"]]))
            sub = (f"SELECT {key_sel + ', ' if keys else ''}{col}::DOUBLE AS v, "
                   f"sum(samplerate) OVER ({over} ORDER BY {col} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cw, "
                   f"sum(samplerate) OVER ({over}) AS tw FROM src WHERE {where} AND {col} IS NOT NULL")
            pq = (f"SELECT {', '.join(aliases) + ', ' if keys else ''}min(v) FILTER (WHERE cw::DOUBLE >= {p} * tw::DOUBLE) AS c{i} "
                  f"FROM ({sub}){' GROUP BY ALL' if keys else ''}")
            on = " AND ".join(f"m.{a} IS NOT DISTINCT FROM p{i}.{a}" for a in aliases) or "TRUE"
            joins.append(f"LEFT JOIN ({pq}) p{i} ON {on}")
            cols.append(f"p{i}.c{i}")
        return f"SELECT m.*, {', '.join(cols)} FROM ({main}) m {' '.join(joins)}"

    def results_sql(self) -> str:
        inner = self._aggregate([], None)
        having_ops = {"=": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
        keyed = {calc_key(c): f"c{i}" for i, c in enumerate(self.simple)}
        wh = [f"{keyed[calc_key({'op': h['calculate_op'], 'column': h.get('column')})]} {having_ops[h['op']]} {lit(float(h['value']))}"
              for h in self.spec.get("havings", [])]
        orders = []
        for o in self.spec.get("orders", []):
            if o.get("op"):
                desc = (o.get("order") or "descending").startswith("desc")
                orders.append(f"{keyed[calc_key({'op': o['op'], 'column': o.get('column')})]} {'DESC' if desc else 'ASC'} NULLS LAST")
            else:
                desc = (o.get("order") or "ascending").startswith("desc")
                orders.append(f"b{self.bds.index(o['column'])} {'DESC' if desc else 'ASC'} NULLS LAST")
        if not self.spec.get("orders"):
            orders.append("c0 DESC NULLS LAST" if self.simple else "__n DESC NULLS LAST")
        orders += [f"b{i} ASC NULLS LAST" for i in range(len(self.bds))]
        limit = self.spec.get("limit") or 100
        return (f"SELECT * FROM ({inner}){' WHERE ' + ' AND '.join(wh) if wh else ''} "
                f"ORDER BY {', '.join(orders)} LIMIT {limit}")

    def run(self, con) -> dict:
        """Runs every statement Sonde's engine runs for this spec; returns Sonde-shaped data.
        With `disable_series`, the results statement alone (and a heatmap's, whose totals are
        part of the results)."""
        results_only = bool(self.spec.get("disable_series"))
        rows = con.execute(self.results_sql()).fetchall()
        names = [d[0] for d in con.description]
        groups, results = [], []
        for r in rows:
            rec = dict(zip(names, r))
            g = tuple(rec[f"b{i}"] for i in range(len(self.bds)))
            groups.append(g)
            d = {b: g[i] for i, b in enumerate(self.bds)}
            for i, c in enumerate(self.simple):
                d[calc_key(c)] = rec[f"c{i}"]
            results.append(d)
        series: dict = {}
        if groups:
            restrict = group_restriction(self.bds, groups) if self.bds else None
            t_expr = f"(epoch_us(timestamp) - {self.start_us}) // {self.g_us}"
            if self.simple and not results_only:
                con.execute(self._aggregate([(t_expr, "t")], restrict))
                names = [d[0] for d in con.description]
                for r in con.fetchall():
                    rec = dict(zip(names, r))
                    g = tuple(rec[f"b{i}"] for i in range(len(self.bds)))
                    d = series.setdefault((rec["t"], g), {})
                    for i, c in enumerate(self.simple):
                        d[calc_key(c)] = rec[f"c{i}"]
            for c in self.calcs:
                if c["op"] == "HEATMAP":
                    self._heatmap(con, c, restrict, t_expr, groups, results, series)
        if results_only:
            series = {}
        for (t, g), d in series.items():
            d.update({b: g[i] for i, b in enumerate(self.bds)})
        series_out = {(self.start_us + t * self.g_us, g): d for (t, g), d in series.items()}
        return {"results": results, "series": series_out}

    def _heatmap(self, con, c, restrict, t_expr, groups, results, series):
        col = ident(c["column"])
        where = self.where + (f" AND {restrict}" if restrict else "")
        lo, hi = con.execute(f"SELECT min({col}::DOUBLE), max({col}::DOUBLE) FROM src WHERE {where}").fetchone()
        key = calc_key(c)
        if lo is None:
            for r in results:
                r[key] = None
            return
        width = (hi - lo) / HEATMAP_BUCKETS if hi > lo else 1.0
        bsel = "".join(f", {ident(b)} AS b{i}" for i, b in enumerate(self.bds))
        rows = con.execute(
            f"SELECT {t_expr} AS t, CAST(trunc(({col}::DOUBLE - {lit(lo)}) / {lit(width)}) AS BIGINT) AS v{bsel}, "
            f"sum(samplerate) AS n FROM src WHERE {where} AND {col} IS NOT NULL GROUP BY ALL").fetchall()
        gi = {g: i for i, g in enumerate(groups)}
        totals = [[0] * HEATMAP_BUCKETS for _ in groups]
        hist: dict = {}
        for t, v, *rest in rows:
            g, n = tuple(rest[:-1]), rest[-1]
            if g not in gi:
                continue
            v = min(max(v, 0), HEATMAP_BUCKETS - 1)
            hist.setdefault((t, g), [0] * HEATMAP_BUCKETS)[v] += n
            totals[gi[g]][v] += n
        hm = lambda counts: {"min": lo, "max": hi, "bucket_width": width, "counts": counts}  # noqa: E731
        for (t, g), counts in hist.items():
            series.setdefault((t, g), {})[key] = hm(counts)
        for i, r in enumerate(results):
            r[key] = hm(totals[i])


def sonde_query_shape(answer: dict, spec: dict) -> dict:
    """Sonde's answer in the same shape as SpecSQL.run's."""
    bds = list(dict.fromkeys(spec.get("breakdowns", [])))
    results = [r["data"] for r in answer["data"]["results"]]
    series = {}
    for s in answer["data"].get("series") or []:  # empty with disable_series
        g = tuple(s["data"].get(b) for b in bds)
        series[(to_us(s["time"]), g)] = s["data"]
    return {"results": results, "series": series, "approximate": answer["meta"].get("approximate"),
            "breakdowns": bds}


# --- raw events, traces, BubbleUp ----------------------------------------------------------

def events_sql(req: dict) -> str:
    return (f"SELECT epoch_us(timestamp) AS ts, \"request.id\" FROM src WHERE {where_sql(req)} "
            f"ORDER BY timestamp DESC LIMIT {req.get('limit', 100)}")


def events_run(con, req: dict) -> dict:
    # Sonde returns every column of the matching events; so does this statement.
    # (timestamps as epoch µs: fetching TIMESTAMPTZ into Python would need pytz)
    con.execute(f"SELECT * REPLACE (epoch_us(timestamp) AS timestamp) FROM src WHERE {where_sql(req)} "
                f"ORDER BY src.timestamp DESC LIMIT {req.get('limit', 100)}")
    names = [d[0] for d in con.description]
    rows = [dict(zip(names, r)) for r in con.fetchall()]
    return {"events": [[r["timestamp"], r["request.id"]] for r in rows]}


def sonde_events_shape(answer: dict) -> dict:
    return {"events": [[to_us(e["timestamp"]), e.get("request.id")] for e in answer["events"]]}


def trace_run(con, trace_id: str) -> dict:
    rows = con.execute(f"SELECT * REPLACE (epoch_us(timestamp) AS timestamp) FROM src "
                       f"WHERE \"trace.trace_id\" = {lit(trace_id)}").fetchall()
    names = [d[0] for d in con.description]
    spans = [dict(zip(names, r)) for r in rows]
    return {"span_ids": sorted(s["trace.span_id"] for s in spans)}


def sonde_trace_shape(answer: dict) -> dict:
    return {"span_ids": sorted(s["trace.span_id"] for s in answer["spans"])}


def bubbleup_run(con, req: dict, columns: list[tuple[str, str]]) -> dict:
    """BubbleUp as Sonde computes it: numeric ranges over the population, then per column the
    weighted counts of each value (or each of 20 buckets) on either side of the selection.
    `columns` are (name, kind) with kind 'num', 'bool' or 'str' (every column but samplerate,
    timestamp and the selection's own column)."""
    h = req["selection"]["heatmap"]
    hc = ident(h["column"])
    where = where_sql(req)
    sel = (f"coalesce(timestamp >= {ts_lit(h['start_time'])} AND timestamp < {ts_lit(h['end_time'])} "
           f"AND {hc}::DOUBLE >= {lit(float(h['min']))} AND {hc}::DOUBLE <= {lit(float(h['max']))}, FALSE)")
    w = "greatest(coalesce(samplerate, 1), 1)"
    cols = [(n, k) for n, k in columns if n != h["column"]]
    nums = [n for n, k in cols if k == "num"]
    ranges = {}
    if nums:
        r = con.execute("SELECT " + ", ".join(f"min({ident(n)}::DOUBLE), max({ident(n)}::DOUBLE)" for n in nums)
                        + f" FROM src WHERE {where}").fetchone()
        for i, n in enumerate(nums):
            ranges[n] = (r[2 * i] or 0.0, r[2 * i + 1] or 0.0)
    tot = con.execute(f"SELECT sum({w}) FILTER (WHERE {sel}), sum({w}) FILTER (WHERE NOT {sel}) "
                      f"FROM src WHERE {where}").fetchone()
    totals = [int(tot[0] or 0), int(tot[1] or 0)]
    share = lambda c: [c[0] / totals[0] if totals[0] else 0.0, c[1] / totals[1] if totals[1] else 0.0]  # noqa: E731
    out = {"selection": totals[0], "baseline": totals[1], "columns": {}}
    for n, kind in cols:
        c = ident(n)
        if kind == "num":
            lo, hi = ranges[n]
            width = (hi - lo) / BUBBLE_BUCKETS if hi > lo else 1.0
            key = (f"CASE WHEN {c} IS NULL THEN NULL ELSE least(greatest(CAST(trunc(({c}::DOUBLE - {lit(float(lo))}) "
                   f"/ {lit(float(width))}) AS BIGINT), 0), {BUBBLE_BUCKETS - 1}) END")
            rows = con.execute(f"SELECT {key} AS k, sum({w}) FILTER (WHERE {sel}), sum({w}) FILTER (WHERE NOT {sel}) "
                               f"FROM src WHERE {where} GROUP BY 1").fetchall()
            vals = {k: [int(s or 0), int(b or 0)] for k, s, b in rows}
            missing = vals.pop(None, [0, 0])
            buckets = [vals.get(i, [0, 0]) for i in range(BUBBLE_BUCKETS)]
            score = sum(abs(a - b) for a, b in map(share, buckets)) + abs(share(missing)[0] - share(missing)[1])
            out["columns"][n] = {"score": score / 2, "exact": True,
                                 "buckets": [share(x) for x in buckets], "missing": share(missing)}
            continue
        # Top values by population weight, ties by value (Sonde: by the value's JSON text, the
        # same order for these ASCII values); the missing row first, and the number of distinct
        # values, so only 11 rows leave DuckDB.
        rows = con.execute(
            f"SELECT k, s, b, count(*) OVER () - count(k IS NULL OR NULL) OVER () AS nd FROM ("
            f"SELECT {c} AS k, coalesce(sum({w}) FILTER (WHERE {sel}), 0) AS s, "
            f"coalesce(sum({w}) FILTER (WHERE NOT {sel}), 0) AS b FROM src WHERE {where} GROUP BY 1) "
            f"ORDER BY k IS NULL DESC, s + b DESC, k ASC LIMIT {BUBBLE_TOP + 1}").fetchall()
        missing = [0, 0]
        kept = []
        for k, s, b, nd in rows:
            if k is None:
                missing = [int(s), int(b)]
            elif len(kept) < BUBBLE_TOP:
                kept.append((k, [int(s), int(b)]))
        distinct = rows[0][3] if rows else 0
        rest = [totals[i] - missing[i] - sum(c2[i] for _, c2 in kept) for i in (0, 1)]
        entries = [(k, share(c2)) for k, c2 in kept]
        score = sum(abs(s[0] - s[1]) for _, s in entries)
        score += abs(share(rest)[0] - share(rest)[1]) + abs(share(missing)[0] - share(missing)[1])
        # Sonde keeps at most 10,000 distinct values per column (the first seen); past that its
        # top values and "other" depend on scan order, so such columns are not compared.
        out["columns"][n] = {"score": score / 2, "exact": distinct <= BUBBLE_MAX_DISTINCT,
                             "values": {json.dumps(k): s for k, s in entries},
                             "other": share(rest), "missing": share(missing)}
    return out


def sonde_bubbleup_shape(answer: dict) -> dict:
    out = {"selection": answer["selection"]["count"], "baseline": answer["baseline"]["count"], "columns": {}}
    for c in answer["columns"]:
        if "buckets" in c:
            out["columns"][c["column"]] = {"score": c["score"], "buckets": [[b["selection"], b["baseline"]] for b in c["buckets"]],
                                           "missing": [c["missing"]["selection"], c["missing"]["baseline"]]}
        else:
            out["columns"][c["column"]] = {"score": c["score"],
                                           "values": {json.dumps(v["value"]): [v["selection"], v["baseline"]] for v in c["values"]},
                                           "other": [c["other"]["selection"], c["other"]["baseline"]],
                                           "missing": [c["missing"]["selection"], c["missing"]["baseline"]]}
    return out


def bubbleup_compare(sonde: dict, duck: dict) -> list[str]:
    diffs = []
    for k in ("selection", "baseline"):
        if sonde[k] != duck[k]:
            diffs.append(f"{k} count: sonde {sonde[k]} duckdb {duck[k]}")
    for name, d in duck["columns"].items():
        s = sonde["columns"].get(name)
        if s is None:
            diffs.append(f"column {name}: missing from Sonde's answer")
            continue
        if not d["exact"]:
            continue
        d = {k: v for k, v in d.items() if k != "exact"}
        diffs += [f"column {name}: {m}" for m in compare(s, d)]
    extra = set(sonde["columns"]) - set(duck["columns"])
    if extra:
        diffs.append(f"columns only Sonde compared: {sorted(extra)}")
    return diffs


# Scores closer than this are ties a sample is not asked to order (the README's rule; the
# integration test's BUBBLE_TIE).
BUBBLE_TIE = 0.01


def bubbleup_top_compare(sonde: dict, duck: dict, n: int = 5) -> list[str]:
    """A sampled BubbleUp against the exact one: the same sizes, and the same first `n` columns
    in the same order, by the tie rule: the column Sonde puts at each place scores, exactly,
    within BUBBLE_TIE of DuckDB's column at that place (its shares come from a sample, so they
    are not compared)."""
    diffs = [f"{k} count: sonde {sonde[k]} duckdb {duck[k]}" for k in ("selection", "baseline") if sonde[k] != duck[k]]
    order = lambda a: sorted(a["columns"].items(), key=lambda kv: (-round(kv[1]["score"], 9), kv[0]))  # noqa: E731
    exact = order(duck)
    for i, (col, _) in enumerate(order(sonde)[:n]):
        want, got = exact[i][1]["score"], duck["columns"].get(col, {}).get("score", -1.0)
        if abs(want - got) > BUBBLE_TIE:
            diffs.append(f"place {i + 1}: sonde {col} (exact score {got:.5f}) where DuckDB has "
                         f"{exact[i][0]} ({want:.5f}); first {n}: sonde {[c for c, _ in order(sonde)[:n]]} "
                         f"duckdb {[c for c, _ in exact[:n]]}")
    return diffs


# --- comparison ----------------------------------------------------------------------------

REL_TOL = 1e-9
# Percentiles from Sonde's sketches (meta.approximate) are within this of the exact value.
SKETCH_REL_TOL = 0.005


def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def compare(a, b, path: str = "", out: list | None = None, limit: int = 8, approx: bool = False) -> list[str]:
    """Differences between two answers (floats within a relative 1e-9: sums in another order;
    with `approx`, a percentile's within the sketches' relative error)."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if _num(a) and _num(b):
        # A percentile's key is its calculation's, e.g. "P99(duration_ms)".
        key = path.rsplit("/", 1)[-1]
        tol = SKETCH_REL_TOL * 1.000001 if approx and key.startswith("P") and "(" in key else REL_TOL
        if not math.isclose(float(a), float(b), rel_tol=tol, abs_tol=1e-9):
            out.append(f"{path}: sonde {a!r} vs duckdb {b!r}")
    elif isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a:
                out.append(f"{path}/{k}: only in duckdb ({b[k]!r})")
            elif k not in b:
                out.append(f"{path}/{k}: only in sonde ({a[k]!r})")
            else:
                compare(a[k], b[k], f"{path}/{k}", out, limit, approx)
            if len(out) >= limit:
                break
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} items in sonde vs {len(b)} in duckdb")
        for i, (x, y) in enumerate(zip(a, b)):
            compare(x, y, f"{path}[{i}]", out, limit, approx)
            if len(out) >= limit:
                break
    elif a != b:
        out.append(f"{path}: sonde {a!r} vs duckdb {b!r}")
    return out


def compare_query(sonde: dict, duck: dict) -> list[str]:
    approx = bool(sonde.get("approximate"))
    s_res, d_res = sonde["results"], duck["results"]
    if approx and sonde.get("breakdowns"):
        # Groups ordered by a percentile from sketches may take another order than the exact
        # one where their values are within the sketches' error of each other: pair the groups
        # by their breakdown values instead of by place.
        def group(r):
            return tuple(repr(r.get(b)) for b in sonde["breakdowns"])
        s_res, d_res = sorted(s_res, key=group), sorted(d_res, key=group)
    diffs = compare(s_res, d_res, "results", approx=approx)
    s, d = sonde["series"], duck["series"]
    ks, kd = set(s), set(d)
    if ks != kd:
        only_s, only_d = sorted(ks - kd, key=str)[:3], sorted(kd - ks, key=str)[:3]
        diffs.append(f"series keys differ: {len(ks)} vs {len(kd)}; only sonde {only_s}, only duckdb {only_d}")
    for k in sorted(ks & kd, key=str):
        compare(s[k], d[k], f"series{k}", diffs, approx=approx)
        if len(diffs) >= 8:
            break
    return diffs
