//! The shape of a trace: its spans arranged as a tree, whatever the data says.
//!
//! Real span data is not always a tree. The same span arrives twice (a collector's retry, a
//! batch re-sent, the same spans loaded into two datasets); Zipkin's "shared" spans give the
//! client and the server half of one call the same span id; a buggy client can make a span its
//! own ancestor. A naive "children of each span id" walk then repeats subtrees (a chain of
//! depth *d* with every span doubled has `2^d` paths) or never ends. [`build`] guarantees
//! instead:
//!
//! - **every span appears exactly once**: as a node of the tree, or folded into the node of an
//!   identical copy ([`Node::duplicates`]);
//! - **spans that share an id but differ** (client and server halves) are both nodes, nested in
//!   kind order — client/producer, then internal, then server/consumer — each later one marked
//!   [`Node::shared_id`]; children of the id hang under the last of them (the half that did the
//!   work);
//! - **cycles are broken**: where following parents would return to a span, the earliest span
//!   of the cycle becomes a root marked [`Node::cycle`];
//! - a span whose parent is not in the trace is a root marked [`Node::missing_parent`];
//! - the answer is a flat list in depth-first order (parent before child, siblings by start
//!   time), so its size is linear in the spans and no consumer has to recurse.
//!
//! Everything runs in O(n) time and memory (plus the sort the caller did by start time).

use std::collections::HashMap;

/// What the tree builder needs of one span. Spans are given in start-time order: their
/// position is the order of roots and siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRef<'a> {
    /// `trace.span_id`, if the span has one.
    pub span_id: Option<&'a str>,
    /// `trace.parent_id`, if any (an empty id counts as none).
    pub parent_id: Option<&'a str>,
    /// `span.kind` (`client`, `server`, …), used to nest the halves of a shared span id.
    pub kind: Option<&'a str>,
    /// A hash of everything that identifies the span's content (all fields but where it was
    /// stored): equal fingerprints under one span id are copies of one span.
    pub fingerprint: u64,
}

/// One node of the tree, in depth-first order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// The span's position in the input.
    pub index: usize,
    /// The position (in the input) of the span this one hangs under; `None` for a root.
    pub parent: Option<usize>,
    /// 0 for roots.
    pub depth: usize,
    /// A root because its `parent_id` names no span of the trace.
    pub missing_parent: bool,
    /// A root because its parents led back to it: the link to its parent was cut here.
    pub cycle: bool,
    /// Another span of the trace has the same span id with different content (e.g. the
    /// server half of a Zipkin shared span); this one is nested under it.
    pub shared_id: bool,
    /// Input positions of identical copies of this span, shown once as this node.
    pub duplicates: Vec<usize>,
}

/// What [`build`] found, for the answer's `meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeStats {
    /// Root nodes (including those with a missing parent and broken cycles).
    pub roots: usize,
    /// Spans folded into an identical copy.
    pub duplicates: usize,
    /// Cycles broken.
    pub cycles: usize,
    /// Nodes marked `shared_id`.
    pub shared: usize,
    /// Greatest depth.
    pub max_depth: usize,
}

/// Rank of a span kind when several spans share an id: the caller's half first.
fn kind_rank(kind: Option<&str>) -> u8 {
    match kind.map(|k| k.trim_start_matches("SPAN_KIND_").to_ascii_lowercase()) {
        Some(k) if k == "client" => 0,
        Some(k) if k == "producer" => 1,
        Some(k) if k == "server" => 3,
        Some(k) if k == "consumer" => 4,
        _ => 2,
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// Arranges `spans` (in start-time order) as a tree; see the module header for the rules.
pub fn build(spans: &[SpanRef<'_>]) -> (Vec<Node>, TreeStats) {
    let n = spans.len();
    let mut stats = TreeStats::default();
    // 1. Group by span id; fold identical copies into the first of them.
    let mut by_id: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        if let Some(id) = non_empty(s.span_id) {
            by_id.entry(id).or_default().push(i);
        }
    }
    // copy_of[i]: the node span i is folded into (itself when it is a node).
    let mut copy_of: Vec<usize> = (0..n).collect();
    // up[i]: the span i hangs under, for nodes.
    let mut up: Vec<Option<usize>> = vec![None; n];
    let mut shared = vec![false; n];
    // holder[id]: the node that children naming `id` as parent hang under.
    let mut holder: HashMap<&str, usize> = HashMap::with_capacity(by_id.len());
    // The first node of each id's chain: the one whose own parent is looked up.
    let mut heads: Vec<usize> = Vec::new();
    for (id, members) in &by_id {
        let mut variants: Vec<usize> = Vec::new();
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for &i in members {
            match seen.get(&spans[i].fingerprint) {
                Some(&first) => copy_of[i] = first,
                None => {
                    seen.insert(spans[i].fingerprint, i);
                    variants.push(i);
                }
            }
        }
        variants.sort_by_key(|&i| (kind_rank(spans[i].kind), i));
        for w in variants.windows(2) {
            up[w[1]] = Some(w[0]);
            shared[w[1]] = true;
        }
        heads.push(variants[0]);
        holder.insert(id, *variants.last().expect("a group has a member"));
    }
    // Spans without an id are nodes of their own, heads of nothing but their own parent link.
    heads.extend((0..n).filter(|&i| non_empty(spans[i].span_id).is_none()));
    let is_node: Vec<bool> = (0..n).map(|i| copy_of[i] == i).collect();

    // 2. Each head's parent: the holder of its parent id.
    let mut missing = vec![false; n];
    for &h in &heads {
        if let Some(p) = non_empty(spans[h].parent_id) {
            match holder.get(p) {
                Some(&target) => up[h] = Some(target),
                None => missing[h] = true,
            }
        }
    }

    // 3. Break cycles: walk up from each node not yet settled; meeting a node of the current
    //    walk closes a cycle, cut at its earliest span.
    const UNSEEN: u8 = 0;
    const ON_PATH: u8 = 1;
    const SETTLED: u8 = 2;
    let mut state = vec![UNSEEN; n];
    let mut cycle = vec![false; n];
    let mut path: Vec<usize> = Vec::new();
    for start in (0..n).filter(|&i| is_node[i]) {
        if state[start] != UNSEEN {
            continue;
        }
        path.clear();
        let mut at = start;
        loop {
            state[at] = ON_PATH;
            path.push(at);
            match up[at] {
                Some(p) if state[p] == UNSEEN => at = p,
                Some(p) if state[p] == ON_PATH => {
                    // The cycle is p … at on the path.
                    let from = path.iter().rposition(|&x| x == p).expect("p is on the path");
                    let cut = *path[from..].iter().min().expect("a cycle has members");
                    up[cut] = None;
                    cycle[cut] = true;
                    stats.cycles += 1;
                    break;
                }
                _ => break,
            }
        }
        for &x in &path {
            state[x] = SETTLED;
        }
    }

    // 4. Children lists (by input order, which is start-time order), then a depth-first walk.
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut roots = Vec::new();
    for i in (0..n).filter(|&i| is_node[i]) {
        match up[i] {
            Some(p) => children[p].push(i),
            None => roots.push(i),
        }
    }
    let mut duplicates: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in (0..n).filter(|&i| !is_node[i]) {
        duplicates[copy_of[i]].push(i);
        stats.duplicates += 1;
    }
    stats.roots = roots.len();
    let mut out = Vec::with_capacity(n);
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&r| (r, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        stats.max_depth = stats.max_depth.max(depth);
        stats.shared += usize::from(shared[i]);
        out.push(Node {
            index: i,
            parent: up[i],
            depth,
            missing_parent: missing[i] && up[i].is_none(),
            cycle: cycle[i],
            shared_id: shared[i],
            duplicates: std::mem::take(&mut duplicates[i]),
        });
        stack.extend(children[i].iter().rev().map(|&c| (c, depth + 1)));
    }
    (out, stats)
}

/// The forms under which a trace id may have been stored, for looking it up by the id a user
/// has: as given, lowercase and uppercase hex, and a 64-bit id (16 hex digits, as Zipkin and
/// older Jaeger clients send) also left-padded with zeros to 128 bits (32 digits, as OTLP
/// stores it) — and the padded form's 16-digit tail.
pub fn trace_id_forms(id: &str) -> Vec<String> {
    let id = id.trim();
    let mut forms = vec![id.to_string()];
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        let lower = id.to_ascii_lowercase();
        let mut hex = vec![lower.clone()];
        if lower.len() == 16 {
            hex.push(format!("{:0>32}", lower));
        } else if lower.len() == 32 && lower.starts_with("0000000000000000") {
            hex.push(lower[16..].to_string());
        }
        for h in hex {
            forms.push(h.to_ascii_uppercase());
            forms.push(h);
        }
    }
    let mut seen = std::collections::HashSet::new();
    forms.retain(|f| seen.insert(f.clone()));
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span<'a>(id: &'a str, parent: Option<&'a str>, fp: u64) -> SpanRef<'a> {
        SpanRef {
            span_id: Some(id),
            parent_id: parent,
            kind: None,
            fingerprint: fp,
        }
    }

    /// Every input position exactly once, parents before children, depths consistent.
    fn check(spans: &[SpanRef<'_>], nodes: &[Node]) {
        let mut seen = vec![0; spans.len()];
        let mut pos = HashMap::new();
        for (k, n) in nodes.iter().enumerate() {
            seen[n.index] += 1;
            for &d in &n.duplicates {
                seen[d] += 1;
            }
            pos.insert(n.index, k);
            match n.parent {
                Some(p) => {
                    let pk = pos[&p];
                    assert!(pk < k);
                    assert_eq!(nodes[pk].depth + 1, n.depth);
                }
                None => assert_eq!(n.depth, 0),
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
    }

    #[test]
    fn a_chain_with_every_span_sent_twice_is_linear() {
        let ids: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let mut spans = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let parent = (i > 0).then(|| ids[i - 1].as_str());
            spans.push(span(id, parent, i as u64));
            spans.push(span(id, parent, i as u64));
        }
        let (nodes, stats) = build(&spans);
        check(&spans, &nodes);
        assert_eq!(nodes.len(), 40);
        assert_eq!(stats.duplicates, 40);
        assert_eq!(stats.roots, 1);
        assert_eq!(stats.max_depth, 39);
    }

    #[test]
    fn a_cycle_is_cut_at_its_earliest_span() {
        // a → b → c → a, and d under c.
        let spans = [
            span("a", Some("c"), 1),
            span("b", Some("a"), 2),
            span("c", Some("b"), 3),
            span("d", Some("c"), 4),
        ];
        let (nodes, stats) = build(&spans);
        check(&spans, &nodes);
        assert_eq!(stats.cycles, 1);
        assert_eq!(nodes[0].index, 0);
        assert!(nodes[0].cycle);
        assert_eq!(nodes.len(), 4);
        // A span that is its own parent.
        let spans = [span("x", Some("x"), 1)];
        let (nodes, stats) = build(&spans);
        assert_eq!((stats.cycles, nodes[0].cycle, nodes[0].parent), (1, true, None));
    }

    #[test]
    fn shared_span_halves_are_nested_client_then_server() {
        let mut server = span("b", Some("a"), 3);
        server.kind = Some("server");
        let mut client = span("b", Some("a"), 2);
        client.kind = Some("client");
        // Server half listed first (started a little earlier by its clock).
        let spans = [span("a", None, 1), server, client, span("c", Some("b"), 4)];
        let (nodes, stats) = build(&spans);
        check(&spans, &nodes);
        let order: Vec<usize> = nodes.iter().map(|n| n.index).collect();
        assert_eq!(order, [0, 2, 1, 3]);
        assert_eq!(nodes[2].parent, Some(2));
        assert!(nodes[2].shared_id && !nodes[1].shared_id);
        assert_eq!(
            nodes[3].parent,
            Some(1),
            "children of the id hang under the server half"
        );
        assert_eq!(stats.shared, 1);
    }

    #[test]
    fn orphans_and_spans_without_ids_are_roots() {
        let spans = [
            span("a", Some("gone"), 1),
            SpanRef {
                span_id: None,
                parent_id: Some("a"),
                kind: None,
                fingerprint: 2,
            },
            span("b", Some(""), 3),
        ];
        let (nodes, stats) = build(&spans);
        check(&spans, &nodes);
        assert_eq!(stats.roots, 2);
        assert!(nodes[0].missing_parent);
        assert_eq!(nodes[1].parent, Some(0));
        assert!(!nodes[2].missing_parent);
    }

    #[test]
    fn trace_ids_are_found_by_any_form() {
        let f = trace_id_forms("ABCDEF0123456789");
        assert!(f.contains(&"abcdef0123456789".to_string()));
        assert!(f.contains(&"0000000000000000abcdef0123456789".to_string()));
        let f = trace_id_forms("0000000000000000abcdef0123456789");
        assert!(f.contains(&"abcdef0123456789".to_string()));
        assert!(f.contains(&"0000000000000000ABCDEF0123456789".to_string()));
        assert_eq!(trace_id_forms("not-hex"), ["not-hex"]);
    }
}
