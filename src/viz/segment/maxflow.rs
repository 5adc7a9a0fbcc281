//! Minimum s-t cut by the Boykov–Kolmogorov algorithm (Boykov & Kolmogorov 2004, "An
//! Experimental Comparison of Min-Cut/Max-Flow Algorithms for Energy Minimization in Vision",
//! PAMI 26(9)): two search trees, one grown from the source and one from the sink, that are
//! reused after every augmentation instead of being rebuilt (as Dinic's or Ford–Fulkerson's
//! breadth-first searches are); orphans left by saturated edges are re-adopted or freed. It is
//! the usual choice for GraphCut on image grids, whose augmenting paths are short.
//!
//! Terminal edges are stored as one signed residual per node (positive: capacity from the
//! source, negative: to the sink), after the flow that passes straight from the source to the
//! sink through the node has been pushed, as the authors' `maxflow-v3.01` does. Capacities are
//! `f64` and must be finite and non-negative ([`Graph::add_edge`], [`Graph::add_terminal`]
//! refuse anything else).

use std::collections::VecDeque;

use crate::error::{Error, Result};

/// No arc / no node.
const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tree {
    Free,
    Source,
    Sink,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Parent {
    None,
    Terminal,
    Orphan,
    /// the arc from this node to its parent
    Arc(u32),
}

/// A directed graph with a source and a sink, for one max-flow.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// per node: its first arc (a linked list through `next`)
    first: Vec<u32>,
    /// per node: residual capacity from the source (> 0) or to the sink (< 0)
    terminal: Vec<f64>,
    /// per arc: the node it enters, the next arc leaving the same node, its residual capacity;
    /// arcs come in pairs, `a ^ 1` is `a`'s reverse
    head: Vec<u32>,
    next: Vec<u32>,
    cap: Vec<f64>,
    /// flow already pushed straight through nodes by [`Graph::add_terminal`]
    flow: f64,
    tree: Vec<Tree>,
}

fn check_cap(what: &str, c: f64) -> Result<()> {
    if c.is_finite() && c >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("max-flow: the {what} capacity {c} is not a finite number >= 0")))
    }
}

impl Graph {
    /// A graph of `nodes` nodes and no edges; `edges` pairs of arcs are reserved.
    pub fn new(nodes: usize, edges: usize) -> Graph {
        Graph {
            first: vec![NONE; nodes],
            terminal: vec![0.0; nodes],
            head: Vec::with_capacity(2 * edges),
            next: Vec::with_capacity(2 * edges),
            cap: Vec::with_capacity(2 * edges),
            flow: 0.0,
            tree: vec![],
        }
    }

    /// The number of nodes (pixels), terminals not counted.
    pub fn nodes(&self) -> usize {
        self.first.len()
    }

    fn check_node(&self, i: usize) -> Result<()> {
        if i < self.nodes() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!("max-flow: node {i} of a graph of {} nodes", self.nodes())))
        }
    }

    /// An edge `i → j` of capacity `cap` and `j → i` of `rev`.
    pub fn add_edge(&mut self, i: usize, j: usize, cap: f64, rev: f64) -> Result<()> {
        self.check_node(i)?;
        self.check_node(j)?;
        check_cap("edge", cap)?;
        check_cap("edge", rev)?;
        if self.head.len() + 2 > NONE as usize {
            return Err(Error::InvalidArgument("max-flow: more than 2^32 - 2 arcs".into()));
        }
        for (from, to, c) in [(i, j, cap), (j, i, rev)] {
            self.head.push(to as u32);
            self.next.push(self.first[from]);
            self.first[from] = (self.head.len() - 1) as u32;
            self.cap.push(c);
        }
        Ok(())
    }

    /// Add capacity `source` from the source to `i` and `sink` from `i` to the sink (repeated
    /// calls add up).
    pub fn add_terminal(&mut self, i: usize, source: f64, sink: f64) -> Result<()> {
        self.check_node(i)?;
        check_cap("source", source)?;
        check_cap("sink", sink)?;
        let t = self.terminal[i];
        let (s, k) = if t > 0.0 { (source + t, sink) } else { (source, sink - t) };
        self.flow += s.min(k);
        self.terminal[i] = s - k;
        Ok(())
    }

    /// Whether node `i` is on the source side of the minimum cut found by [`Graph::max_flow`]
    /// (the nodes the source still reaches in the residual graph; false before it ran).
    pub fn is_source_side(&self, i: usize) -> bool {
        self.tree.get(i) == Some(&Tree::Source)
    }

    /// The maximum flow from the source to the sink, which equals the minimum cut's capacity;
    /// afterwards [`Graph::is_source_side`] gives the cut. Runs once per graph (the residual
    /// capacities are consumed).
    pub fn max_flow(&mut self) -> f64 {
        let n = self.nodes();
        let mut bk = Bk { g: self, parent: vec![Parent::None; n], ts: vec![0; n], dist: vec![0; n], time: 0, active: VecDeque::new(), is_active: vec![false; n], orphans: VecDeque::new() };
        bk.run();
        self.flow
    }
}

/// The state of one run.
struct Bk<'g> {
    g: &'g mut Graph,
    parent: Vec<Parent>,
    /// the time stamp and distance to the terminal a node's path was last checked at
    ts: Vec<u32>,
    dist: Vec<u32>,
    time: u32,
    active: VecDeque<u32>,
    is_active: Vec<bool>,
    orphans: VecDeque<u32>,
}

impl Bk<'_> {
    fn activate(&mut self, i: u32) {
        if !self.is_active[i as usize] {
            self.is_active[i as usize] = true;
            self.active.push_back(i);
        }
    }

    fn run(&mut self) {
        let n = self.g.nodes();
        self.g.tree = vec![Tree::Free; n];
        for i in 0..n {
            let t = self.g.terminal[i];
            if t != 0.0 {
                self.g.tree[i] = if t > 0.0 { Tree::Source } else { Tree::Sink };
                self.parent[i] = Parent::Terminal;
                self.dist[i] = 1;
                self.activate(i as u32);
            }
        }
        let mut current: Option<u32> = None;
        loop {
            // the node to grow from: the one that just gave a path (it may give more), or the
            // next active one still in a tree
            let i = match current.take() {
                Some(i) if self.g.tree[i as usize] != Tree::Free => i,
                _ => loop {
                    let Some(i) = self.active.pop_front() else { return };
                    self.is_active[i as usize] = false;
                    if self.g.tree[i as usize] != Tree::Free {
                        break i;
                    }
                },
            };
            if let Some(mid) = self.grow(i) {
                // i stays the current node (not queued while the trees are repaired): it may
                // join the trees again
                self.is_active[i as usize] = true;
                self.augment(mid);
                self.adopt();
                self.is_active[i as usize] = false;
                current = Some(i);
            }
        }
    }

    /// Grow the tree of `i` over its free neighbours; the arc (source side → sink side) that
    /// joins the two trees, if one does.
    fn grow(&mut self, i: u32) -> Option<u32> {
        let iu = i as usize;
        let tree = self.g.tree[iu];
        let mut a = self.g.first[iu];
        while a != NONE {
            let au = a as usize;
            // the residual capacity in the tree's direction: away from the source, towards the sink
            let open = if tree == Tree::Source { self.g.cap[au] } else { self.g.cap[au ^ 1] } > 0.0;
            if open {
                let j = self.g.head[au];
                let ju = j as usize;
                match self.g.tree[ju] {
                    Tree::Free => {
                        self.g.tree[ju] = tree;
                        self.parent[ju] = Parent::Arc(a ^ 1);
                        self.ts[ju] = self.ts[iu];
                        self.dist[ju] = self.dist[iu] + 1;
                        self.activate(j);
                    }
                    t if t != tree => return Some(if tree == Tree::Source { a } else { a ^ 1 }),
                    _ => {
                        // a shorter path to the terminal through i (the authors' heuristic)
                        if self.ts[ju] <= self.ts[iu] && self.dist[ju] > self.dist[iu] {
                            self.parent[ju] = Parent::Arc(a ^ 1);
                            self.ts[ju] = self.ts[iu];
                            self.dist[ju] = self.dist[iu] + 1;
                        }
                    }
                }
            }
            a = self.g.next[au];
        }
        None
    }

    /// The tail of arc `a` (the head of its reverse).
    fn tail(&self, a: u32) -> u32 {
        self.g.head[(a ^ 1) as usize]
    }

    /// Push the bottleneck along source → … → tail(mid) → head(mid) → … → sink; the nodes
    /// whose parent arc or terminal edge saturates become orphans.
    fn augment(&mut self, mid: u32) {
        let mut b = self.g.cap[mid as usize];
        // source side: flow runs parent → node, along the reverse of the node's parent arc
        let mut i = self.tail(mid) as usize;
        loop {
            match self.parent[i] {
                Parent::Arc(p) => {
                    b = b.min(self.g.cap[(p ^ 1) as usize]);
                    i = self.g.head[p as usize] as usize;
                }
                _ => {
                    b = b.min(self.g.terminal[i]);
                    break;
                }
            }
        }
        // sink side: flow runs node → parent, along the parent arc
        let mut i = self.g.head[mid as usize] as usize;
        loop {
            match self.parent[i] {
                Parent::Arc(p) => {
                    b = b.min(self.g.cap[p as usize]);
                    i = self.g.head[p as usize] as usize;
                }
                _ => {
                    b = b.min(-self.g.terminal[i]);
                    break;
                }
            }
        }
        self.push(mid, b);
        for (start, sign) in [(self.tail(mid), 1.0), (self.g.head[mid as usize], -1.0)] {
            let mut i = start as usize;
            loop {
                match self.parent[i] {
                    Parent::Arc(p) => {
                        let pu = p as usize;
                        // the arc the flow runs along: parent → i (source side), i → parent (sink)
                        let along = if sign > 0.0 { pu ^ 1 } else { pu };
                        self.push(along as u32, b);
                        let next = self.g.head[pu] as usize;
                        if self.g.cap[along] == 0.0 {
                            self.parent[i] = Parent::Orphan;
                            self.orphans.push_back(i as u32);
                        }
                        i = next;
                    }
                    _ => {
                        self.g.terminal[i] -= sign * b;
                        if self.g.terminal[i] == 0.0 {
                            self.parent[i] = Parent::Orphan;
                            self.orphans.push_back(i as u32);
                        }
                        break;
                    }
                }
            }
        }
        self.g.flow += b;
    }

    fn push(&mut self, a: u32, b: f64) {
        self.g.cap[a as usize] -= b;
        self.g.cap[(a ^ 1) as usize] += b;
    }

    /// Re-attach every orphan to a node of its tree that still reaches the terminal, or free it
    /// (its children become orphans, its tree neighbours active).
    fn adopt(&mut self) {
        self.time += 1;
        while let Some(i) = self.orphans.pop_front() {
            self.adopt_one(i as usize);
        }
    }

    fn adopt_one(&mut self, i: usize) {
        let tree = self.g.tree[i];
        let mut best: Option<(u32, u32)> = None; // (arc, distance)
        let mut a = self.g.first[i];
        while a != NONE {
            let au = a as usize;
            // a parent must send flow to i (source tree) or take it (sink tree)
            let open = if tree == Tree::Source { self.g.cap[au ^ 1] } else { self.g.cap[au] } > 0.0;
            let j = self.g.head[au] as usize;
            if open && self.g.tree[j] == tree && self.parent[j] != Parent::None {
                if let Some(d) = self.origin(j) {
                    if best.is_none_or(|(_, bd)| d < bd) {
                        best = Some((a, d));
                    }
                    // stamp the path so later checks stop early
                    let mut k = j;
                    let mut dk = d;
                    while self.ts[k] != self.time {
                        self.ts[k] = self.time;
                        self.dist[k] = dk;
                        dk -= 1;
                        match self.parent[k] {
                            Parent::Arc(p) => k = self.g.head[p as usize] as usize,
                            _ => break,
                        }
                    }
                }
            }
            a = self.g.next[au];
        }
        if let Some((a, d)) = best {
            self.parent[i] = Parent::Arc(a);
            self.ts[i] = self.time;
            self.dist[i] = d + 1;
            return;
        }
        // no parent: free i
        let mut a = self.g.first[i];
        while a != NONE {
            let au = a as usize;
            let j = self.g.head[au] as usize;
            if self.g.tree[j] == tree {
                let open = if tree == Tree::Source { self.g.cap[au ^ 1] } else { self.g.cap[au] } > 0.0;
                if open {
                    self.activate(j as u32);
                }
                if let Parent::Arc(p) = self.parent[j] {
                    if self.g.head[p as usize] as usize == i {
                        self.parent[j] = Parent::Orphan;
                        self.orphans.push_back(j as u32);
                    }
                }
            }
            a = self.g.next[au];
        }
        self.g.tree[i] = Tree::Free;
        self.parent[i] = Parent::None;
    }

    /// The distance from `j` to its terminal if its path there has no orphan (`None`
    /// otherwise); paths checked at this time stamp are trusted.
    fn origin(&self, j: usize) -> Option<u32> {
        let mut k = j;
        let mut d = 0u32;
        loop {
            if self.ts[k] == self.time {
                return Some(d + self.dist[k]);
            }
            d += 1;
            match self.parent[k] {
                Parent::Terminal => {
                    return Some(d);
                }
                Parent::Arc(p) => k = self.g.head[p as usize] as usize,
                Parent::Orphan | Parent::None => return None,
            }
        }
    }
}
