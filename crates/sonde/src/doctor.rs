//! `sonde doctor`: what `sonde serve` would run with, given the same flags and environment — the
//! build, the machine, the data directory and its free disk, where segments go, the limits and
//! whether auth is on — and anything that would stop it or pause ingest. It opens nothing for
//! writing but a probe file, so it is safe beside a running server.

use crate::{ServeArgs, VERSION, is_loopback, load_keys};
use std::path::Path;

/// The report: lines of `(topic, what)` and the problems found (each one would stop the server
/// or pause ingest).
pub(crate) struct Report {
    pub(crate) lines: Vec<(&'static str, String)>,
    pub(crate) problems: Vec<String>,
}

impl Report {
    /// Prints the report; the problems last, so they are what the eye lands on.
    pub(crate) fn print(&self) {
        for (topic, what) in &self.lines {
            println!("{topic:<12} {what}");
        }
        if self.problems.is_empty() {
            println!("\nno problems found");
        } else {
            println!("\n{} problem(s):", self.problems.len());
            for p in &self.problems {
                println!("  - {p}");
            }
        }
    }
}

/// Checks the configuration `a` describes.
pub(crate) fn check(a: &ServeArgs) -> Report {
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    lines.push(("version", format!("sonde {VERSION}")));
    lines.push(("machine", machine()));

    let dir = &a.data_dir;
    let (dir_state, dir_problem) = data_dir_state(dir);
    lines.push(("data dir", format!("{} ({dir_state})", dir.display())));
    problems.extend(dir_problem);
    // The free space of the disk that holds (or will hold) the directory.
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("."));
    match sonde_storage::free_disk_bytes(existing) {
        Some(free) => {
            let floor = a.min_free_disk_bytes;
            lines.push((
                "free disk",
                format!(
                    "{} (ingest pauses below {}: --min-free-disk-bytes)",
                    bytes(free),
                    bytes(floor)
                ),
            ));
            if floor > 0 && free < floor {
                problems.push(format!(
                    "only {} free on the data directory's disk, under --min-free-disk-bytes ({}): ingest \
                     would answer 503 until space is freed",
                    bytes(free),
                    bytes(floor)
                ));
            }
        }
        None => lines.push(("free disk", "unknown (statvfs failed)".to_string())),
    }
    lines.push(("storage", storage(a)));
    lines.push((
        "listen",
        format!(
            "{} (HTTP: events API, OTLP/HTTP, NDJSON, queries, UI); OTLP/gRPC {}",
            a.listen, a.grpc_listen
        ),
    ));
    match load_keys(a) {
        Ok(keys) if keys.is_empty() => {
            let exposed: Vec<&str> = [Some(a.listen.as_str()), a.grpc_listen.address()]
                .into_iter()
                .flatten()
                .filter(|addr| !is_loopback(addr))
                .collect();
            if exposed.is_empty() {
                lines.push((
                    "auth",
                    "off: no API keys (allowed: every address is loopback)".to_string(),
                ));
            } else if a.insecure_no_auth {
                lines.push((
                    "auth",
                    format!(
                        "OFF on {} (--insecure-no-auth): anyone who reaches it can read and write",
                        exposed.join(", ")
                    ),
                ));
            } else {
                lines.push(("auth", "off: no API keys".to_string()));
                problems.push(format!(
                    "no API keys, and {} is not a loopback address: serve would refuse to start (make keys with \
                     `sonde keys new`, pass --keys-file, or --insecure-no-auth)",
                    exposed.join(" and ")
                ));
            }
        }
        Ok(keys) => lines.push((
            "auth",
            format!("on: {} API key(s); every request needs one", keys.len()),
        )),
        Err(e) => {
            lines.push(("auth", "unreadable keys".to_string()));
            problems.push(format!("{e:#}"));
        }
    }
    lines.push((
        "durability",
        match a.durability {
            crate::DurabilityArg::Fsync => "fsync: an event is acknowledged once its WAL record is on disk".to_string(),
            crate::DurabilityArg::None => {
                "none: acknowledged before the fsync (a crash can lose recent acks)".to_string()
            }
        },
    ));
    lines.push((
        "events",
        format!(
            "body {} (--max-body-bytes), event {}, {} fields, names {} B, strings {}, depth {}, flattened to {} levels",
            bytes(a.max_body_bytes as u64),
            bytes(a.max_event_bytes as u64),
            a.max_fields,
            a.max_field_name_len,
            bytes(a.max_string_len as u64),
            a.max_depth,
            a.flatten_depth
        ),
    ));
    let m = a.memory();
    let total = m.total();
    lines.push((
        "memory",
        format!(
            "planned {} (--server-memory): requests {} (--memory-limit), write buffers {} (--max-buffer-bytes), \
             footers {}, chunks {}, partials {}, id indexes {}: at most about {} with the process itself",
            bytes(a.server_memory as u64),
            bytes(m.requests as u64),
            bytes(m.buffers as u64),
            bytes(m.metadata_cache as u64),
            bytes(m.chunk_cache as u64),
            bytes(m.partials_cache as u64),
            bytes(m.index_cache as u64),
            bytes(total as u64 + (200 << 20))
        ),
    ));
    if let Some(mem) = memory_total()
        && total as u64 > mem
    {
        problems.push(format!(
            "the memory limits add up to {}, more than this machine's {}: lower --server-memory \
             (or the flags of its parts that were given)",
            bytes(total as u64),
            bytes(mem)
        ));
    }
    lines.push((
        "queries",
        format!(
            "timeout {} (--query-timeout), {} at once, {} per query, answers up to {}, BubbleUp samples above {} rows",
            a.query_timeout,
            a.max_concurrent_queries,
            bytes(m.query as u64),
            bytes(a.max_answer_bytes as u64),
            a.bubbleup_sample_rows
        ),
    ));
    lines.push((
        "saved objects",
        format!(
            "up to {} of each kind per dataset (--max-saved-objects)",
            a.max_saved_objects
        ),
    ));
    lines.push((
        "segments",
        format!(
            "flush at {} events or {}, compaction to {} rows every {}, retention {}",
            a.flush_rows,
            a.flush_age,
            a.compaction_target_rows,
            a.maintenance_interval,
            a.retention
                .map(|d| d.to_string())
                .unwrap_or_else(|| "none (keep everything)".to_string())
        ),
    ));
    Report { lines, problems }
}

/// One line for the server's start: the same facts as the report's first lines.
pub(crate) fn startup_summary(a: &ServeArgs) -> String {
    let free = sonde_storage::free_disk_bytes(&a.data_dir)
        .map(bytes)
        .unwrap_or_else(|| "unknown".to_string());
    format!(
        "sonde {VERSION}; data dir {} ({free} free); storage {}; {}",
        a.data_dir.display(),
        storage(a),
        machine()
    )
}

/// Whether the data directory exists and can be written, or can be made.
fn data_dir_state(dir: &Path) -> (String, Option<String>) {
    if dir.is_dir() {
        let probe = dir.join(format!(".sonde-doctor-{}", std::process::id()));
        match std::fs::write(&probe, b"") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
                let state = if dir.join("catalog.json").exists() {
                    "exists, writable, has a catalog"
                } else {
                    "exists, writable, no data yet"
                };
                (state.to_string(), None)
            }
            Err(e) => (
                "not writable".to_string(),
                Some(format!(
                    "cannot write to the data directory {}: {e} (--data-dir)",
                    dir.display()
                )),
            ),
        }
    } else if dir.exists() {
        (
            "not a directory".to_string(),
            Some(format!("the data directory {} is a file (--data-dir)", dir.display())),
        )
    } else {
        let parent = dir.ancestors().skip(1).find(|p| p.is_dir()).unwrap_or(Path::new("."));
        let meta = std::fs::metadata(parent);
        if meta.is_ok_and(|m| !m.permissions().readonly()) {
            ("does not exist yet; serve creates it".to_string(), None)
        } else {
            (
                "does not exist and cannot be made".to_string(),
                Some(format!(
                    "{} is not writable, so --data-dir {} cannot be made",
                    parent.display(),
                    dir.display()
                )),
            )
        }
    }
}

/// Where segments and the catalog go.
fn storage(a: &ServeArgs) -> String {
    match a.storage.as_deref().filter(|s| !s.is_empty()) {
        Some(url) => {
            let endpoint = std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .map(|e| format!(" at {e}"))
                .unwrap_or_default();
            let role = match sonde_storage::Role::from(a.role) {
                sonde_storage::Role::All => String::new(),
                role => format!(
                    "; cluster role {} as node {}",
                    role.name(),
                    a.node_name.clone().unwrap_or_else(crate::host_name)
                ),
            };
            format!("{url}{endpoint} (the WAL stays in the data directory){role}")
        }
        None => format!("local: {}", a.data_dir.join("datasets").display()),
    }
}

/// CPUs and memory, as the kernel reports them.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    match memory_total() {
        Some(mem) => format!("{cpus} CPUs, {} memory", bytes(mem)),
        None => format!("{cpus} CPUs"),
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes (Linux).
fn memory_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes in the largest binary unit that keeps a number ≥ 1 (`1.5 GiB`, `512 MiB`, `300 B`).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn bytes_reads_as_a_person_writes_them() {
        assert_eq!(bytes(300), "300 B");
        assert_eq!(bytes(32 << 20), "32 MiB");
        assert_eq!(bytes(1536 << 20), "1.5 GiB");
        assert_eq!(bytes(0), "0 B");
    }
}
