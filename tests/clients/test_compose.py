"""deploy/docker-compose.yml's Sonde services run as the file gives them, without Docker (there is
no daemon here): each service's command and environment, with moto in MinIO's place and the
containers' ports, paths and host names mapped onto loopback. Events sent to one query node with
the example's keys are answered by the other, by distributed SQL over both query nodes."""

import os
import subprocess
import tempfile

import yaml

from conftest import BIN, Moto, Sonde, eventually, new_key

COMPOSE = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "docker-compose.yml")
# Flags whose values name the container's world: the harness gives its own.
MAPPED = {"--listen", "--grpc-listen", "--data-dir", "--advertise-url"}


def service_args(command):
    """A service's `serve` flags, less those the harness maps onto loopback."""
    assert command[0] == "serve", command
    args, rest = [], command[1:]
    while rest:
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag not in MAPPED:
            args += [flag, str(value)]
    return args


def test_the_compose_examples_services_run_as_a_cluster():
    with open(COMPOSE) as f:
        compose = yaml.safe_load(f)
    services = compose["services"]
    sonde = [name for name, s in services.items() if s.get("image") == "sonde:local"]
    assert sonde == ["ingest-1", "ingest-2", "query-1", "query-2"], sonde
    bucket = services["bucket"]["entrypoint"][-1].rsplit("/", 1)[-1]
    moto = Moto(bucket)
    keys = tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False)
    ingest_key, l1 = new_key("compose-ingest", "ingest")
    query_key, l2 = new_key("compose-query", "query")
    keys.write(f"{l1}\n{l2}\n")
    keys.close()
    nodes = {}
    try:
        for name in sonde:
            env = {k: str(v) for k, v in services[name]["environment"].items()}
            assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
            env.update(moto.env())
            env["SONDE_KEYS_FILE"] = keys.name
            env["SONDE_CLUSTER_KEY"] = query_key
            # Flushed at once, and small scans split too, so both query nodes' workers take part
            # (fresh rows travel inside the plan; segments are what is split).
            env["SONDE_FLUSH_AGE"] = "1s"
            env["SONDE_DISTRIBUTED_BYTES_PER_PARTITION"] = "1"
            nodes[name] = Sonde(env=env, args=service_args(services[name]["command"]))
        events = [{"service.name": f"svc-{i % 3}", "duration_ms": i} for i in range(300)]
        nodes["query-2"].key = ingest_key
        for i in range(0, 300, 100):
            nodes["query-2"].post("/1/batch/compose", [{"data": e} for e in events[i : i + 100]])
        q1 = nodes["query-1"]
        q1.key = query_key

        def answered():
            r = q1.post("/api/sql", {"sql": 'SELECT "service.name" AS s, COUNT(*) AS n, SUM(duration_ms) AS d FROM compose GROUP BY 1 ORDER BY 1'})
            assert [(row["s"], row["n"], row["d"]) for row in r["rows"]] == [
                (f"svc-{k}", 100, sum(i for i in range(300) if i % 3 == k)) for k in range(3)
            ], r
            assert r["meta"]["distributed"]["workers"] == 2, r["meta"]
            return r

        eventually(answered, seconds=30)
    finally:
        for n in nodes.values():
            n.stop()
        moto.stop()
        os.unlink(keys.name)
