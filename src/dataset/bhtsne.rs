//! Barnes–Hut t-SNE (van der Maaten, "Accelerating t-SNE using Tree-Based Algorithms", JMLR
//! 2014; the reference `bhtsne`'s `tsne.cpp` and `sptree.cpp`): the gradient of [`super::tsne`]
//! in O(n log n) a step for datasets past a few thousand images.
//!
//! - Input similarities: each point's `k = ⌊3·perplexity⌋` nearest neighbours (exact, brute
//!   force over blocks of rows in parallel: no VP-tree, which gains little in the hundreds of dimensions
//!   of CNN features), the same binary search for the precision as the exact path over those `k`
//!   only, then `(P + Pᵀ) / 2n` over the union of the neighbour lists ([`SparseP`]).
//! - Attraction: over the sparse `P`, exact.
//! - Repulsion and `Z`: from a quadtree ([`QuadTree`]) of the embedding, rebuilt each step; a
//!   cell is summarised by its centre of mass where `side / |y_i − y_cell| < θ`.
//!
//! Deviations from the reference, each to make the result exact in the limit and reproducible:
//! the Barnes–Hut condition uses the cell's full side (bhtsne's half-width; scikit-learn's
//! choice), the cell holding `y_i` is never summarised (so `y_i` never repels itself), points in
//! a leaf are visited one by one (duplicates included), so θ = 0 with `k = n − 1` gives the exact
//! gradient (up to rounding and the exact path's 1e-12 floor on `P`). The tree is built in point
//! order and each point's sum runs in a fixed order, so a seed gives the same bits on every run
//! and thread count.

use rayon::prelude::*;

use super::tsne::{conditional_row, dist2, sq_distances_from, DISTANCE_ROWS};

/// Deeper than this a cell is a leaf, whatever it holds (points closer than 2⁻⁴⁸ of the extent).
const MAX_DEPTH: usize = 48;

/// The symmetrised joint probabilities of the neighbour graph, by row (compressed sparse rows;
/// each row's columns ascending).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SparseP {
    /// row `i` is `cols[starts[i]..starts[i + 1]]`
    pub starts: Vec<usize>,
    pub cols: Vec<u32>,
    pub values: Vec<f64>,
}

impl SparseP {
    /// `P` of the points `x` (already centred and scaled) at `perplexity` over each point's `k`
    /// nearest neighbours (`1 ≤ k < n`).
    pub fn new(x: &[Vec<f64>], perplexity: f64, k: usize) -> SparseP {
        let n = x.len();
        let log_u = perplexity.ln();
        // per point: its k nearest (ties: the lower index) and p_{j|i} over them
        let blocks: Vec<Vec<Vec<(u32, f64)>>> = (0..n.div_ceil(DISTANCE_ROWS))
            .into_par_iter()
            .map(|b| {
                let first = b * DISTANCE_ROWS;
                let mut d = vec![0.0; n * DISTANCE_ROWS.min(n - first)];
                sq_distances_from(x, first, &mut d);
                d.chunks(n).enumerate().map(|(r, dr)| neighbours(dr, first + r, k, log_u)).collect()
            })
            .collect();
        let rows: Vec<Vec<(u32, f64)>> = blocks.into_iter().flatten().collect();
        // (P + Pᵀ) / 2n: every entry and its transpose, sorted, equal positions summed (two at
        // most, and a + b = b + a exactly, so the order they meet in does not matter)
        let mut entries: Vec<(u32, u32, f64)> = Vec::with_capacity(2 * n * k);
        for (i, row) in rows.iter().enumerate() {
            for &(j, v) in row {
                entries.push((i as u32, j, v));
                entries.push((j, i as u32, v));
            }
        }
        entries.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
        let scale = 1.0 / (2.0 * n as f64);
        let mut p = SparseP { starts: vec![0; n + 1], cols: vec![], values: vec![] };
        let mut e = 0;
        while e < entries.len() {
            let (i, j, mut v) = entries[e];
            e += 1;
            while e < entries.len() && (entries[e].0, entries[e].1) == (i, j) {
                v += entries[e].2;
                e += 1;
            }
            p.cols.push(j);
            p.values.push(v * scale);
            p.starts[i as usize + 1] = p.cols.len();
        }
        // rows with no entry of their own start where the previous one ended
        for i in 1..=n {
            p.starts[i] = p.starts[i].max(p.starts[i - 1]);
        }
        p
    }
}

/// Point `i`'s `k` nearest (ties: the lower index; `d` its squared distances to every point) and
/// `p_{j|i}` over them.
fn neighbours(d: &[f64], i: usize, k: usize, log_u: f64) -> Vec<(u32, f64)> {
    let mut order: Vec<(f64, u32)> = d.iter().enumerate().filter(|&(j, _)| j != i).map(|(j, &v)| (v, j as u32)).collect();
    let by = |a: &(f64, u32), b: &(f64, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by);
        order.truncate(k);
    }
    order.sort_unstable_by(by);
    let dk: Vec<f64> = order.iter().map(|o| o.0).collect();
    let mut row = vec![0.0; dk.len()];
    conditional_row(&dk, None, log_u, &mut row);
    order.iter().map(|o| o.1).zip(row).collect()
}

/// A cell of the quadtree: a square, the centre of mass and count of the points in it, and its
/// children (or, for a leaf, its points).
#[derive(Clone, Debug)]
struct Cell {
    lo: [f64; 2],
    side: f64,
    com: [f64; 2],
    count: usize,
    /// children by quadrant (`x ≥ mid` + 2·`y ≥ mid`), 0 where empty; all 0 for a leaf
    children: [u32; 4],
    /// a leaf's points: `order[first..first + count]`
    first: usize,
}

impl Cell {
    fn quadrant(&self, p: [f64; 2]) -> usize {
        let half = self.side / 2.0;
        (p[0] >= self.lo[0] + half) as usize + 2 * (p[1] >= self.lo[1] + half) as usize
    }

    fn is_leaf(&self) -> bool {
        self.children == [0; 4]
    }
}

/// A quadtree over the embedding (bhtsne's `SPTree` in 2-D): built in point order, so the same
/// points give the same tree.
pub(crate) struct QuadTree {
    cells: Vec<Cell>,
    order: Vec<u32>,
}

impl QuadTree {
    pub fn new(y: &[[f64; 2]]) -> QuadTree {
        let lo = [y.iter().map(|v| v[0]).fold(f64::INFINITY, f64::min), y.iter().map(|v| v[1]).fold(f64::INFINITY, f64::min)];
        let hi = [y.iter().map(|v| v[0]).fold(f64::NEG_INFINITY, f64::max), y.iter().map(|v| v[1]).fold(f64::NEG_INFINITY, f64::max)];
        // a square a little larger than the extent, so that the largest point is inside
        let side = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(f64::MIN_POSITIVE) * (1.0 + 1e-9);
        let mut t = QuadTree { cells: vec![], order: (0..y.len() as u32).collect() };
        let mut scratch = vec![0u32; y.len()];
        t.build(y, lo, side, 0, 0, &mut scratch);
        t
    }

    /// Add the cell over `order[first..first + count]` (and its subtree); its index.
    fn build(&mut self, y: &[[f64; 2]], lo: [f64; 2], side: f64, first: usize, depth: usize, scratch: &mut [u32]) -> u32 {
        let pts = &self.order[first..first + scratch.len()];
        let count = pts.len();
        let sum = pts.iter().fold([0.0, 0.0], |s, &i| [s[0] + y[i as usize][0], s[1] + y[i as usize][1]]);
        let mut cell = Cell { lo, side, com: [sum[0] / count as f64, sum[1] / count as f64], count, children: [0; 4], first };
        let at = self.cells.len() as u32;
        self.cells.push(cell.clone());
        if count <= 1 || depth == MAX_DEPTH {
            return at;
        }
        // a stable partition by quadrant
        let quadrant: Vec<usize> = pts.iter().map(|&i| cell.quadrant(y[i as usize])).collect();
        let mut sizes = [0usize; 4];
        quadrant.iter().for_each(|&q| sizes[q] += 1);
        let mut next = [0, sizes[0], sizes[0] + sizes[1], sizes[0] + sizes[1] + sizes[2]];
        let starts = next;
        for (&i, &q) in pts.iter().zip(&quadrant) {
            scratch[next[q]] = i;
            next[q] += 1;
        }
        self.order[first..first + count].copy_from_slice(scratch);
        let half = side / 2.0;
        for q in 0..4 {
            if sizes[q] > 0 {
                let clo = [lo[0] + half * (q % 2) as f64, lo[1] + half * (q / 2) as f64];
                let s = &mut scratch[starts[q]..starts[q] + sizes[q]];
                cell.children[q] = self.build(y, clo, half, first + starts[q], depth + 1, s);
            }
        }
        self.cells[at as usize].children = cell.children;
        at
    }

    /// The repulsion on point `i` at `y[i]`, unnormalised (`Σ_j q̃_ij² (y_i − y_j)`, `q̃ = (1 +
    /// d²)⁻¹`), and its part of `Z` (`Σ_j q̃_ij`), cells summarised where `side < θ·distance`.
    pub fn repulsion(&self, y: &[[f64; 2]], i: usize, theta: f64) -> ([f64; 2], f64) {
        let (mut f, mut z) = ([0.0; 2], 0.0);
        self.visit(0, true, y, i, theta, &mut f, &mut z);
        (f, z)
    }

    #[allow(clippy::too_many_arguments)]
    fn visit(&self, c: usize, holds_i: bool, y: &[[f64; 2]], i: usize, theta: f64, f: &mut [f64; 2], z: &mut f64) {
        let cell = &self.cells[c];
        let yi = y[i];
        if cell.is_leaf() {
            for &j in &self.order[cell.first..cell.first + cell.count] {
                if j as usize != i {
                    add(yi, y[j as usize], 1.0, f, z);
                }
            }
            return;
        }
        let d2 = dist2(yi, cell.com);
        if !holds_i && cell.side * cell.side < theta * theta * d2 {
            add(yi, cell.com, cell.count as f64, f, z);
            return;
        }
        let own = if holds_i { cell.quadrant(yi) } else { 4 };
        for (q, &child) in cell.children.iter().enumerate() {
            if child != 0 {
                self.visit(child as usize, q == own, y, i, theta, f, z);
            }
        }
    }
}

/// `count` points at `yj` repelling `yi`.
fn add(yi: [f64; 2], yj: [f64; 2], count: f64, f: &mut [f64; 2], z: &mut f64) {
    let q = 1.0 / (1.0 + dist2(yi, yj));
    *z += count * q;
    let m = count * q * q;
    f[0] += m * (yi[0] - yj[0]);
    f[1] += m * (yi[1] - yj[1]);
}

/// The Barnes–Hut gradient at `y` (into `grad`), `P` multiplied by `exaggeration`: the same
/// quantity as [`super::tsne::exact_gradient`], `4 (Σ_j e·p_ij q̃_ij (y_i − y_j) − Σ_j q̃_ij²
/// (y_i − y_j) / Z)`.
pub(crate) fn gradient(p: &SparseP, y: &[[f64; 2]], exaggeration: f64, theta: f64, grad: &mut [[f64; 2]]) {
    let tree = QuadTree::new(y);
    let repulsion: Vec<([f64; 2], f64)> = (0..y.len()).into_par_iter().map(|i| tree.repulsion(y, i, theta)).collect();
    let z: f64 = repulsion.iter().map(|r| r.1).sum();
    grad.par_iter_mut().enumerate().for_each(|(i, g)| {
        let mut acc = [0.0; 2];
        for e in p.starts[i]..p.starts[i + 1] {
            let yj = y[p.cols[e] as usize];
            let m = exaggeration * p.values[e] / (1.0 + dist2(y[i], yj));
            acc[0] += m * (y[i][0] - yj[0]);
            acc[1] += m * (y[i][1] - yj[1]);
        }
        let r = repulsion[i].0;
        *g = [4.0 * (acc[0] - r[0] / z), 4.0 * (acc[1] - r[1] / z)];
    });
}

#[cfg(test)]
mod tests {
    use super::super::tsne::{exact_gradient, joint_probabilities, normals};
    use super::*;

    /// `n` points in `dim`-D and an embedding of them, from a seed.
    fn problem(seed: u64, n: usize, dim: usize) -> (Vec<Vec<f64>>, Vec<[f64; 2]>) {
        let x = normals(seed, n * dim).chunks(dim).map(|c| c.iter().map(|v| v * 0.1).collect()).collect();
        let y = normals(seed + 1, 2 * n).chunks(2).map(|c| [3.0 * c[0], 3.0 * c[1]]).collect();
        (x, y)
    }

    /// The exact gradient over the dense `P` and Barnes–Hut's over the sparse one at `theta`.
    fn both(dense: &[f64], sparse: &SparseP, y: &[[f64; 2]], exaggeration: f64, theta: f64) -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
        let (mut want, mut got) = (vec![[0.0; 2]; y.len()], vec![[0.0; 2]; y.len()]);
        exact_gradient(dense, y, exaggeration, &mut want);
        gradient(sparse, y, exaggeration, theta, &mut got);
        (want, got)
    }

    fn worst(a: &[[f64; 2]], b: &[[f64; 2]]) -> (f64, usize) {
        a.iter().zip(b).enumerate().map(|(i, (u, v))| ((u[0] - v[0]).abs().max((u[1] - v[1]).abs()), i)).fold((0.0, 0), |m, e| if e.0 > m.0 { e } else { m })
    }

    #[test]
    fn theta_zero_with_every_neighbour_is_the_exact_gradient() {
        let (n, dim, perplexity) = (53, 7, 9.0);
        let (x, mut y) = problem(5, n, dim);
        y[7] = y[3]; // a duplicate point: one leaf holding two
        let dense = joint_probabilities(&x, perplexity);
        let sparse = SparseP::new(&x, perplexity, n - 1);
        for e in [12.0, 1.0] {
            let (want, got) = both(&dense, &sparse, &y, e, 0.0);
            let (w, i) = worst(&want, &got);
            assert!(w < 1e-9, "exaggeration {e}: point {i}: exact {:?}, Barnes-Hut {:?}", want[i], got[i]);
        }
    }

    #[test]
    fn theta_half_is_within_a_few_percent_of_the_exact_gradient() {
        let (n, dim, perplexity) = (517, 11, 30.0);
        let (x, y) = problem(8, n, dim);
        let dense = joint_probabilities(&x, perplexity);
        // every neighbour: the Barnes–Hut approximation alone, not the sparsification of P
        let sparse = SparseP::new(&x, perplexity, n - 1);
        for e in [12.0, 1.0] {
            let (want, got) = both(&dense, &sparse, &y, e, 0.5);
            let norm = |g: &[[f64; 2]]| g.iter().map(|v| v[0] * v[0] + v[1] * v[1]).sum::<f64>().sqrt();
            let diff: Vec<[f64; 2]> = want.iter().zip(&got).map(|(a, b)| [a[0] - b[0], a[1] - b[1]]).collect();
            let rel = norm(&diff) / norm(&want);
            assert!(rel < 0.03, "exaggeration {e}: |BH - exact| / |exact| = {rel:.4}");
        }
    }

    #[test]
    fn the_tree_holds_every_point_once_and_the_masses_add_up() {
        let (_, mut y) = problem(11, 300, 1);
        y[10] = y[20];
        y[30] = [y[30][0], y[31][1]];
        let t = QuadTree::new(&y);
        let mut seen = t.order.clone();
        seen.sort();
        assert_eq!(seen, (0..300).collect::<Vec<u32>>());
        for c in &t.cells {
            let kids: usize = c.children.iter().filter(|&&k| k != 0).map(|&k| t.cells[k as usize].count).sum();
            assert!(c.is_leaf() || kids == c.count, "a cell of {} points has children of {kids}", c.count);
            for &j in &t.order[c.first..c.first + c.count] {
                let p = y[j as usize];
                let inside = |k: usize| p[k] >= c.lo[k] && p[k] <= c.lo[k] + c.side * (1.0 + 1e-12);
                assert!(inside(0) && inside(1), "point {j} {p:?} outside its cell at {:?} of side {}", c.lo, c.side);
            }
        }
    }
}
