"""Honeycomb's Python libhoney, unmodified, pointed at Sonde."""

import datetime

import libhoney


def test_libhoney_events_with_sample_rates(sonde):
    client = libhoney.Client(writekey="any-key", dataset="hny-py", api_host=sonde.url, block_on_response=True)
    base = datetime.datetime(2026, 11, 25, 9, 0, 0)
    sent = []
    for i in range(30):
        ev = client.new_event()
        ev.add({"endpoint": "/a" if i % 3 else "/b", "duration_ms": 10.5 + i, "i": i, "user": {"id": f"u{i}", "plan": "pro"}})
        ev.created_at = base + datetime.timedelta(seconds=i)
        ev.sample_rate = 1 + i % 4
        ev.send_presampled()  # keep every event, but say what it stands for
        sent.append(ev.sample_rate)
    client.flush()
    responses = []
    while len(responses) < 30:
        r = client.responses().get(timeout=30)
        responses.append(r)
    client.close()
    assert all(r["status_code"] == 202 for r in responses), responses

    events = sonde.post("/api/events/hny-py", {"start_time": "2026-11-25T09:00:00Z", "end_time": "2026-11-25T10:00:00Z", "limit": 100})["events"]
    assert len(events) == 30
    e = next(x for x in events if x["i"] == 7)
    assert e["endpoint"] == "/a" and e["duration_ms"] == 17.5 and e["user.id"] == "u7" and e["user.plan"] == "pro"
    assert e["samplerate"] == 1 + 7 % 4
    assert e["timestamp"] == "2026-11-25T09:00:07Z"

    q = sonde.post(
        "/api/query/hny-py",
        {"calculations": [{"op": "COUNT"}], "breakdowns": ["endpoint"], "start_time": "2026-11-25T09:00:00Z", "end_time": "2026-11-25T10:00:00Z"},
    )
    got = {g["data"]["endpoint"]: g["data"]["COUNT"] for g in q["data"]["results"]}
    want = {"/a": sum(1 + i % 4 for i in range(30) if i % 3), "/b": sum(1 + i % 4 for i in range(30) if i % 3 == 0)}
    assert got == want
