//! Small dense linear algebra on the host, for the methods that need a decomposition of a
//! matrix of a few hundred rows (Eigen-CAM).

/// The largest eigenvalue of the symmetric positive semi-definite `n`×`n` matrix `g` (row-major)
/// and a unit eigenvector of it, by power iteration from the all-ones vector (deterministic),
/// until the vector moves by less than 1e-12 or after 10 000 steps. A zero matrix gives (0, 0).
pub fn top_eigenvector(g: &[f64], n: usize) -> (f64, Vec<f64>) {
    assert_eq!(g.len(), n * n, "an n×n matrix");
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mul = |v: &[f64]| -> Vec<f64> { (0..n).map(|i| g[i * n..(i + 1) * n].iter().zip(v).map(|(a, b)| a * b).sum()).collect() };
    let mut v = vec![1.0 / (n as f64).sqrt(); n];
    // the all-ones start may be orthogonal to the top eigenvector: nudge it once, reproducibly
    let w = mul(&v);
    if norm(&w) == 0.0 {
        for (i, x) in v.iter_mut().enumerate() {
            *x = 1.0 + 1e-3 * (((i * 7919) % 101) as f64 / 101.0);
        }
        let s = norm(&v);
        v.iter_mut().for_each(|x| *x /= s);
    }
    let mut lambda = 0.0;
    for _ in 0..10_000 {
        let w = mul(&v);
        let s = norm(&w);
        if s == 0.0 {
            return (0.0, vec![0.0; n]);
        }
        let next: Vec<f64> = w.iter().map(|x| x / s).collect();
        let moved = next.iter().zip(&v).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        v = next;
        lambda = s;
        if moved < 1e-12 {
            break;
        }
    }
    (lambda, v)
}
