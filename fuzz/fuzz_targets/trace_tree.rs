//! The trace-tree builder over random parents, duplicate ids, identical copies and cycles:
//! every span appears exactly once, parents come before children, depths agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_model::trace::{SpanRef, build};

const IDS: [&str; 12] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", ""];
const KINDS: [Option<&str>; 5] = [None, Some("client"), Some("server"), Some("SPAN_KIND_PRODUCER"), Some("internal")];

fuzz_target!(|data: &[u8]| {
    // Four bytes a span: its id, its parent (or none), its kind, its content.
    let spans: Vec<SpanRef<'_>> = data
        .chunks_exact(4)
        .take(512)
        .map(|c| SpanRef {
            span_id: (c[0] < 240).then(|| IDS[c[0] as usize % IDS.len()]),
            parent_id: (c[1] < 200).then(|| IDS[c[1] as usize % IDS.len()]),
            kind: KINDS[c[2] as usize % KINDS.len()],
            fingerprint: u64::from(c[3] % 3),
        })
        .collect();
    let (nodes, stats) = build(&spans);
    let mut seen = vec![0u8; spans.len()];
    let mut at = vec![usize::MAX; spans.len()];
    let mut roots = 0;
    for (k, n) in nodes.iter().enumerate() {
        seen[n.index] += 1;
        for &d in &n.duplicates {
            seen[d] += 1;
        }
        at[n.index] = k;
        match n.parent {
            Some(p) => {
                assert!(at[p] < k, "parent after child");
                assert_eq!(nodes[at[p]].depth + 1, n.depth);
                assert!(!n.missing_parent && !n.cycle);
            }
            None => {
                roots += 1;
                assert_eq!(n.depth, 0);
            }
        }
    }
    assert!(seen.iter().all(|&c| c == 1), "a span missing or repeated: {seen:?}");
    assert_eq!(roots, stats.roots);
    assert!(nodes.len() <= spans.len());
});
