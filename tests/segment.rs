//! Weakly supervised segmentation (`viz::segment`, `deepviz segment`): the min-cut against every
//! cut of small random graphs and against Edmonds–Karp on noisy 8-neighbour grids; the colour mixture recovering a two-colour sample; GrabCut on a
//! synthetic disc over a textured background seeded by a blurred disc; seeds kept as given even
//! when they contradict the colours; the mask carried into the original's crop box by hand; the
//! command on the sample photo, and its one-line errors.

mod common;

use std::time::Instant;

use deepviz::backend::cpu::Cpu;
use deepviz::engine::Engine;
use deepviz::imageio::{self, CropBox};
use deepviz::model::Model;
use deepviz::viz::{Attribution, Saliency};
use deepviz::viz::segment::{kmeans, largest_component, mask_in_box, overlay, GrabCut, Gmm, Graph, Rgb, Seed};
use image::RgbImage;

/// splitmix64 uniforms in [0, 1) (common::seeded gives [-1, 1)).
fn uniforms(seed: u64, n: usize) -> Vec<f64> {
    common::seeded(seed, n).into_iter().map(|u| (u as f64 + 1.0) / 2.0).collect()
}

/// Standard normals by Box–Muller.
fn normals(seed: u64, n: usize) -> Vec<f64> {
    let u = uniforms(seed, 2 * n);
    (0..n).map(|i| (-2.0 * (1.0 - u[2 * i]).ln()).sqrt() * (2.0 * std::f64::consts::PI * u[2 * i + 1]).cos()).collect()
}

struct SmallGraph {
    n: usize,
    source: Vec<f64>,
    sink: Vec<f64>,
    /// (i, j, cap i→j, cap j→i)
    edges: Vec<(usize, usize, f64, f64)>,
}

/// The capacity of the cut whose source side is `s` (bit i: node i).
fn cut_cost(g: &SmallGraph, s: u32) -> f64 {
    let src = |i: usize| s >> i & 1 == 1;
    let mut c = 0.0;
    for i in 0..g.n {
        c += if src(i) { g.sink[i] } else { g.source[i] };
    }
    for &(i, j, a, b) in &g.edges {
        if src(i) && !src(j) {
            c += a;
        }
        if src(j) && !src(i) {
            c += b;
        }
    }
    c
}

/// A random capacity: zero with probability `p_zero`, else an integer (ties) or a fraction.
fn capacity(u: &mut impl Iterator<Item = f64>, p_zero: f64) -> f64 {
    let r = u.next().unwrap();
    if r < p_zero {
        0.0
    } else if r < 0.5 + p_zero / 2.0 {
        (u.next().unwrap() * 5.0).floor()
    } else {
        u.next().unwrap() * 7.0
    }
}

#[test]
fn min_cut_equals_the_cheapest_of_all_cuts_on_small_random_graphs() {
    for t in 0..300u64 {
        let mut u = uniforms(1000 + t, 600).into_iter();
        let n = 1 + (u.next().unwrap() * 12.0) as usize;
        let source: Vec<f64> = (0..n).map(|_| capacity(&mut u, 0.4)).collect();
        let sink: Vec<f64> = (0..n).map(|_| capacity(&mut u, 0.4)).collect();
        let mut edges = vec![];
        for i in 0..n {
            for j in i + 1..n {
                if u.next().unwrap() < 0.45 {
                    edges.push((i, j, capacity(&mut u, 0.3), capacity(&mut u, 0.3)));
                }
            }
        }
        // a repeated edge adds up
        if let Some(&(i, j, _, _)) = edges.first() {
            edges.push((j, i, capacity(&mut u, 0.0), 0.0));
        }
        let g = SmallGraph { n, source, sink, edges };
        let mut mf = Graph::new(n, g.edges.len());
        for i in 0..n {
            mf.add_terminal(i, g.source[i], g.sink[i]).unwrap();
        }
        for &(i, j, a, b) in &g.edges {
            mf.add_edge(i, j, a, b).unwrap();
        }
        let flow = mf.max_flow();
        let best = (0..1u32 << n).map(|s| cut_cost(&g, s)).fold(f64::INFINITY, f64::min);
        let found: u32 = (0..n).filter(|&i| mf.is_source_side(i)).map(|i| 1 << i).sum();
        let tol = 1e-9 * (1.0 + best);
        assert!((flow - best).abs() <= tol, "graph {t} ({n} nodes): max flow {flow}, cheapest cut {best}");
        assert!((cut_cost(&g, found) - best).abs() <= tol, "graph {t}: the cut returned costs {}, the cheapest {best}", cut_cost(&g, found));
    }
}

/// Edmonds–Karp on a dense residual matrix, node 0 the source and 1 the sink: an independent
/// reference for graphs too large to enumerate.
fn edmonds_karp(mut c: Vec<Vec<f64>>) -> f64 {
    let n = c.len();
    let mut flow = 0.0;
    loop {
        let mut prev = vec![usize::MAX; n];
        prev[0] = 0;
        let mut queue = std::collections::VecDeque::from([0]);
        while let Some(u) = queue.pop_front() {
            for v in 0..n {
                if prev[v] == usize::MAX && c[u][v] > 0.0 {
                    prev[v] = u;
                    queue.push_back(v);
                }
            }
        }
        if prev[1] == usize::MAX {
            return flow;
        }
        let mut b = f64::INFINITY;
        let mut v = 1;
        while v != 0 {
            b = b.min(c[prev[v]][v]);
            v = prev[v];
        }
        let mut v = 1;
        while v != 0 {
            c[prev[v]][v] -= b;
            c[v][prev[v]] += b;
            v = prev[v];
        }
        flow += b;
    }
}

#[test]
fn min_cut_on_noisy_grids_matches_a_reference_max_flow() {
    // 8-neighbour grids like GrabCut's, with random unaries and pairwise weights
    for (t, (h, w)) in [(9, 13), (17, 11), (21, 23)].into_iter().enumerate() {
        let n = h * w;
        let u = uniforms(77 + t as u64, 6 * n);
        let mut dense = vec![vec![0.0; n + 2]; n + 2];
        let mut g = Graph::new(n, 4 * n);
        let mut k = 0;
        for i in 0..n {
            let (s, d) = (u[k] * 4.0, u[k + 1] * 4.0);
            k += 2;
            g.add_terminal(i, s, d).unwrap();
            dense[0][i + 2] += s;
            dense[i + 2][1] += d;
        }
        let mut edges = vec![];
        for y in 0..h {
            for x in 0..w {
                for (dy, dx) in [(0, 1), (1, 1), (1, 0), (1, -1)] {
                    let (yy, xx) = (y as isize + dy, x as isize + dx);
                    if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                        let (i, j) = (y * w + x, yy as usize * w + xx as usize);
                        let c = u[k % u.len()] * 1.5;
                        k += 1;
                        g.add_edge(i, j, c, c).unwrap();
                        dense[i + 2][j + 2] += c;
                        dense[j + 2][i + 2] += c;
                        edges.push((i, j, c));
                    }
                }
            }
        }
        let want = edmonds_karp(dense.clone());
        let got = g.max_flow();
        // the cut returned, priced with the original capacities
        let side: Vec<bool> = (0..n).map(|i| g.is_source_side(i)).collect();
        let mut cost: f64 = (0..n).map(|i| if side[i] { dense[i + 2][1] } else { dense[0][i + 2] }).sum();
        cost += edges.iter().filter(|&&(i, j, _)| side[i] != side[j]).map(|e| e.2).sum::<f64>();
        assert!((got - want).abs() < 1e-9 * want, "{h}x{w}: {got} vs Edmonds-Karp {want}");
        assert!((cost - want).abs() < 1e-9 * want, "{h}x{w}: the cut costs {cost}, the max flow is {want}");
    }
}

#[test]
fn max_flow_refuses_bad_capacities_and_nodes() {
    let mut g = Graph::new(3, 1);
    assert!(g.add_edge(0, 3, 1.0, 1.0).is_err());
    assert!(g.add_edge(0, 1, -1.0, 1.0).is_err());
    assert!(g.add_terminal(1, f64::NAN, 0.0).is_err());
    assert!(g.add_terminal(1, 0.0, f64::INFINITY).is_err());
    // a path source → 0 → 1 → 2 → sink with bottleneck 0.5 in the middle
    g.add_terminal(0, 2.0, 0.0).unwrap();
    g.add_terminal(2, 0.0, 3.0).unwrap();
    g.add_edge(0, 1, 1.0, 0.0).unwrap();
    g.add_edge(1, 2, 0.5, 9.0).unwrap();
    assert_eq!(g.max_flow(), 0.5);
    assert_eq!((0..3).map(|i| g.is_source_side(i)).collect::<Vec<_>>(), [true, true, false]);
}

/// 1400 samples around red (σ 8) and 600 around blue (σ 5).
fn two_colours() -> (Vec<Rgb>, Vec<usize>) {
    let z = normals(7, 3 * 2000);
    let (red, blue) = ([200.0, 40.0, 40.0], [30.0, 60.0, 210.0]);
    let mut samples = vec![];
    let mut truth = vec![];
    for i in 0..2000 {
        let (m, s, c) = if i % 10 < 7 { (red, 8.0, 0) } else { (blue, 5.0, 1) };
        samples.push([m[0] + s * z[3 * i], m[1] + s * z[3 * i + 1], m[2] + s * z[3 * i + 2]]);
        truth.push(c);
    }
    (samples, truth)
}

#[test]
fn the_colour_mixture_recovers_a_two_colour_sample() {
    let (samples, truth) = two_colours();
    let g = Gmm::fit("test", &samples, &kmeans(&samples, 2, 3), 2).unwrap();
    assert_eq!(g.components.len(), 2);
    let (want_means, want_w, want_var) = ([[200.0, 40.0, 40.0], [30.0, 60.0, 210.0]], [0.7, 0.3], [64.0, 25.0]);
    for (m, (w, v)) in want_means.iter().zip(want_w.iter().zip(want_var)) {
        let c = g.components.iter().find(|c| (c.mean[0] - m[0]).abs() < 20.0).expect("a component near each colour");
        for k in 0..3 {
            assert!((c.mean[k] - m[k]).abs() < 1.0, "mean {:?} vs {m:?}", c.mean);
            // the covariance: the sample's (+ the floor of 1) within 15%, no correlation
            assert!((c.cov[k][k] - (v + 1.0)).abs() < 0.15 * v, "variance {} vs {v}", c.cov[k][k]);
            assert!(c.cov[k][(k + 1) % 3].abs() < 0.2 * v);
        }
        assert!((c.weight - w).abs() < 1e-9, "weight {} vs {w}", c.weight);
    }
    // each sample goes to its colour's component, and the likelihood is the mixture's
    let a = g.assign(&samples);
    let red = a[0];
    assert!(a.iter().zip(&truth).all(|(&a, &t)| (a == red) == (t == 0)));
    let z = [120.0, 50.0, 120.0];
    let direct: f64 = g
        .components
        .iter()
        .map(|c| {
            let d: Vec<f64> = (0..3).map(|k| z[k] - c.mean[k]).collect();
            // the covariances are near diagonal: check against the full inverse through a solve
            let inv = invert(&c.cov);
            let m: f64 = (0..3).flat_map(|i| (0..3).map(move |j| (i, j))).map(|(i, j)| d[i] * inv[i][j] * d[j]).sum();
            c.weight * (-0.5 * m).exp() / ((2.0 * std::f64::consts::PI).powi(3) * det(&c.cov)).sqrt()
        })
        .sum();
    assert!((g.log_likelihood(&z) - direct.ln()).abs() < 1e-9, "{} vs {}", g.log_likelihood(&z), direct.ln());
    // seeded: the same seed, the same model; more components than colours still fit
    assert_eq!(kmeans(&samples, 5, 9), kmeans(&samples, 5, 9));
    let g5 = Gmm::fit("test", &samples, &kmeans(&samples, 5, 9), 5).unwrap();
    assert!((g5.components.iter().map(|c| c.weight).sum::<f64>() - 1.0).abs() < 1e-12);
    // one colour only: one component
    assert_eq!(Gmm::fit("flat", &[[5.0; 3]; 10], &kmeans(&[[5.0; 3]; 10], 5, 0), 5).unwrap().components.len(), 1);
    assert!(Gmm::fit("none", &[], &[], 5).is_err());
}

fn det(a: &[[f64; 3]; 3]) -> f64 {
    a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
}

/// Gauss–Jordan inverse (an independent route from the library's cofactors).
fn invert(a: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 6]; 3];
    for i in 0..3 {
        m[i][..3].copy_from_slice(&a[i]);
        m[i][3 + i] = 1.0;
    }
    for c in 0..3 {
        let p = (c..3).max_by(|&x, &y| m[x][c].abs().total_cmp(&m[y][c].abs())).unwrap();
        m.swap(c, p);
        let d = m[c][c];
        m[c].iter_mut().for_each(|v| *v /= d);
        for r in 0..3 {
            if r != c {
                let (f, pivot) = (m[r][c], m[c]);
                for (v, p) in m[r].iter_mut().zip(pivot) {
                    *v -= f * p;
                }
            }
        }
    }
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        r[i].copy_from_slice(&m[i][3..]);
    }
    r
}

/// A reddish disc (noisy) over a textured background of green and blue-grey stripes and noise,
/// `h × w`; and the disc's pixels.
fn disc_picture(h: usize, w: usize, cy: f64, cx: f64, r: f64) -> (RgbImage, Vec<bool>) {
    let noise = uniforms(11, h * w * 3);
    let mut img = RgbImage::new(w as u32, h as u32);
    let mut disc = vec![false; h * w];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let inside = ((y as f64 - cy).powi(2) + (x as f64 - cx).powi(2)).sqrt() <= r;
            disc[i] = inside;
            let base = if inside {
                [205.0, 70.0, 55.0]
            } else if (x + 2 * y) % 7 < 3 {
                [60.0, 150.0, 70.0]
            } else {
                [95.0, 100.0, 160.0]
            };
            let px: Vec<u8> = (0..3).map(|k| (base[k] + 50.0 * (noise[3 * i + k] - 0.5)).clamp(0.0, 255.0) as u8).collect();
            img.put_pixel(x as u32, y as u32, image::Rgb([px[0], px[1], px[2]]));
        }
    }
    (img, disc)
}

/// The disc's indicator blurred by a Gaussian of σ (the "saliency"), plus a little noise.
fn blurred(disc: &[bool], h: usize, w: usize, sigma: f64) -> Vec<f32> {
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f64> = (-r..=r).map(|d| (-(d * d) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let blur1 = |v: &[f64], along_x: bool| -> Vec<f64> {
        let mut out = vec![0.0; h * w];
        for y in 0..h {
            for x in 0..w {
                let (mut s, mut ws) = (0.0, 0.0);
                for (t, kv) in (-r..=r).zip(&k) {
                    let (yy, xx) = if along_x { (y as isize, x as isize + t) } else { (y as isize + t, x as isize) };
                    if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                        s += kv * v[yy as usize * w + xx as usize];
                        ws += kv;
                    }
                }
                out[y * w + x] = s / ws;
            }
        }
        out
    };
    let v: Vec<f64> = disc.iter().map(|&d| if d { 1.0 } else { 0.0 }).collect();
    let noise = uniforms(5, h * w);
    blur1(&blur1(&v, true), false).iter().zip(noise).map(|(b, n)| (b + 0.02 * n) as f32).collect()
}

fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    inter as f64 / union as f64
}

#[test]
fn grabcut_finds_a_disc_from_a_blurred_disc() {
    let (h, w) = (61, 83);
    let (img, disc) = disc_picture(h, w, 33.0, 40.0, 19.0);
    let map = blurred(&disc, h, w, 4.0);
    let gc = GrabCut::default();
    let seeds = gc.seeds(&map).unwrap();
    let nf = seeds.iter().filter(|&&s| s == Seed::Foreground).count();
    let nb = seeds.iter().filter(|&&s| s == Seed::Background).count();
    // the quantiles: 5% and 30% of the pixels (the noise breaks ties)
    assert_eq!(nf, (h * w) - (0.95 * (h * w - 1) as f64).ceil() as usize);
    assert_eq!(nb, (0.30 * (h * w - 1) as f64).floor() as usize + 1);
    let seg = gc.segment(&img, &seeds).unwrap();
    let got = iou(&seg.mask, &disc);
    eprintln!("disc: IoU {got:.4}, {} iterations, converged {}, foreground {:.3}", seg.iterations, seg.converged, seg.foreground_fraction());
    assert!(got > 0.95, "IoU {got}");
    assert!((1..=5).contains(&seg.iterations));
    assert_eq!((seg.foreground_seeds, seg.background_seeds), (nf, nb));
    assert_eq!(seg, gc.segment_map(&img, &map).unwrap(), "deterministic, and segment_map = seeds + segment");
    // the seeds alone cover little of the disc: the cut did the work
    assert!(iou(&seeds.iter().map(|&s| s == Seed::Foreground).collect::<Vec<_>>(), &disc) < 0.3);
}

#[test]
fn the_pairwise_term_cleans_up_colours_that_overlap() {
    // disc and background colours whose noise (σ 16) overlaps: pixel by pixel (γ = 0) the
    // colour models misplace many pixels; the 8-neighbour term (γ = 50) repairs them. (With
    // σ 25 the boundary has no contrast left and γ = 50 shrinks the mask to the seeds: IoU 0.32.)
    let (h, w) = (71, 67);
    let noise = normals(21, h * w * 3);
    let mut img = RgbImage::new(w as u32, h as u32);
    let mut disc = vec![false; h * w];
    for i in 0..h * w {
        let (y, x) = ((i / w) as f64, (i % w) as f64);
        disc[i] = ((y - 36.0).powi(2) + (x - 30.0).powi(2)).sqrt() <= 20.0;
        let base = if disc[i] { [150.0, 105.0, 95.0] } else { [115.0, 115.0, 125.0] };
        let px: Vec<u8> = (0..3).map(|k| (base[k] + 16.0 * noise[3 * i + k]).clamp(0.0, 255.0) as u8).collect();
        img.put_pixel(i as u32 % w as u32, i as u32 / w as u32, image::Rgb([px[0], px[1], px[2]]));
    }
    let map = blurred(&disc, h, w, 4.0);
    let smooth = GrabCut::default().segment_map(&img, &map).unwrap();
    let alone = GrabCut { gamma: 0.0, ..GrabCut::default() }.segment_map(&img, &map).unwrap();
    let (a, b) = (iou(&smooth.mask, &disc), iou(&alone.mask, &disc));
    eprintln!("overlapping colours: IoU {a:.4} with the pairwise term, {b:.4} without");
    assert!(a > 0.95 && b < 0.9, "IoU {a} with the pairwise term, {b} without");
}

#[test]
fn seeds_stay_as_given_even_against_the_colours() {
    let (h, w) = (37, 45);
    let (img, disc) = disc_picture(h, w, 18.0, 22.0, 11.0);
    let mut seeds: Vec<Seed> = disc.iter().enumerate().map(|(i, &d)| if d && i % 5 == 0 { Seed::Foreground } else if !d && i % 3 == 0 { Seed::Background } else { Seed::Unknown }).collect();
    // contradicting seeds: a background seed at the disc's centre, foreground ones in a corner
    seeds[18 * w + 22] = Seed::Background;
    for i in [w + 1, w + 2, 2 * w + 1] {
        seeds[i] = Seed::Foreground;
    }
    let seg = GrabCut { iterations: 3, ..GrabCut::default() }.segment(&img, &seeds).unwrap();
    for (i, s) in seeds.iter().enumerate() {
        match s {
            Seed::Foreground => assert!(seg.mask[i], "foreground seed {i} kept"),
            Seed::Background => assert!(!seg.mask[i], "background seed {i} kept"),
            Seed::Unknown => {}
        }
    }
    assert!(iou(&seg.mask, &disc) > 0.9);
    // without both kinds of seeds, or with a flat map, there is nothing to segment
    assert!(GrabCut::default().segment(&img, &vec![Seed::Background; h * w]).is_err());
    assert!(GrabCut::default().seeds(&vec![0.5; h * w]).is_err());
    assert!(GrabCut::default().seeds(&[0.0, f32::NAN, 1.0]).is_err());
    assert!(GrabCut { fg_quantile: 0.3, bg_quantile: 0.5, ..GrabCut::default() }.check().is_err());
    assert!(GrabCut::default().segment(&img, &seeds[1..]).is_err());
}

#[test]
fn grabcut_at_the_network_input_size_is_quick() {
    // no timing assertion: the number is printed (run with --nocapture)
    let (img, disc) = disc_picture(224, 224, 120.0, 100.0, 60.0);
    let map = blurred(&disc, 224, 224, 8.0);
    let t = Instant::now();
    let seg = GrabCut::default().segment_map(&img, &map).unwrap();
    eprintln!("224x224 GrabCut: {:.1} ms for {} iterations, IoU {:.4}", t.elapsed().as_secs_f64() * 1e3, seg.iterations, iou(&seg.mask, &disc));
    assert!(iou(&seg.mask, &disc) > 0.95);
    // the sample photo seeded by its saliency map: a harder graph (scattered seeds)
    let eng = Engine::new(Model::default_model().unwrap(), Cpu).unwrap();
    let pre = eng.model().preprocess;
    let img = imageio::resize_crop(&imageio::load_rgb(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/chelsea.png").as_ref()).unwrap(), pre.size);
    let (map, _) = Saliency::new(&eng).attribute(&imageio::to_tensor(std::slice::from_ref(&img), &pre), None).unwrap();
    let t = Instant::now();
    let seg = GrabCut::default().segment_map(&img, &map.data).unwrap();
    eprintln!("chelsea 224x224 GrabCut: {:.1} ms for {} iterations", t.elapsed().as_secs_f64() * 1e3, seg.iterations);
}

#[test]
fn the_mask_goes_into_the_crop_box_by_nearest_pixel() {
    // a 2x3 mask over the window x in [1.5, 7.5), y in [1, 3) of a 9x4 image: each mask column
    // covers 2 image columns, each row 1 image row; pixel centres decide
    let mask = [true, false, true, false, true, true];
    let crop = CropBox { x: 1.5, y: 1.0, width: 6.0, height: 2.0, image_size: [9, 4] };
    let full = mask_in_box(&mask, 2, 3, &crop);
    let rows: Vec<String> = full.chunks(9).map(|r| r.iter().map(|&m| if m { '#' } else { '.' }).collect()).collect();
    // column x's centre x + 0.5: 1.5 → column 0 ... 7.5 is outside
    assert_eq!(rows, [".........", ".##..##..", "...####..", "........."]);
    let img = RgbImage::from_pixel(3, 2, image::Rgb([100, 200, 50]));
    let o = overlay(&img, &[false, false, false, false, false, true]).unwrap();
    assert_eq!(o.get_pixel(0, 0).0, [30, 60, 15], "background darkened to 30%");
    assert_eq!(o.get_pixel(1, 1).0, [30, 60, 15], "the boundary is drawn on the foreground side");
    assert_ne!(o.get_pixel(2, 1).0, [100, 200, 50], "the boundary is drawn");
    assert!(overlay(&img, &[true]).is_err());
}

#[test]
fn the_largest_component_is_8_connected() {
    // a diagonal chain of 4 (one component under 8-connectivity), a block of 3, a lone pixel
    let rows = ["#....##", ".#...#.", "..#....", "...#..#"];
    let mask: Vec<bool> = rows.iter().flat_map(|r| r.chars().map(|c| c == '#')).collect();
    let got = largest_component(&mask, 4, 7).unwrap();
    let shown: Vec<String> = got.chunks(7).map(|r| r.iter().map(|&m| if m { '#' } else { '.' }).collect()).collect();
    assert_eq!(shown, ["#......", ".#.....", "..#....", "...#..."]);
    // equal sizes: the first in row-major order; nothing stays nothing
    assert_eq!(largest_component(&[false, true, false, true], 1, 4).unwrap(), [false, true, false, false]);
    assert_eq!(largest_component(&[false; 6], 2, 3).unwrap(), [false; 6]);
    assert!(largest_component(&[true; 5], 2, 3).is_err());
}

fn white_fraction(path: &std::path::Path) -> f64 {
    let m = image::open(path).unwrap().to_rgb8();
    assert!(m.pixels().all(|p| p.0 == [0; 3] || p.0 == [255; 3]), "a black and white mask");
    m.pixels().filter(|p| p.0 == [255; 3]).count() as f64 / (m.width() * m.height()) as f64
}

#[test]
fn the_command_segments_the_cat_and_refuses_bad_input() {
    let dir = common::fresh_dir("segment-cli");
    let out = dir.join("out");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/chelsea.png");
    let o = common::ok(&["segment", "--image", sample, "--raw", "--full-size", "--device", "cpu", "--out", out.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let rec = &v[0];
    assert_eq!(rec["class"], 285, "Egyptian cat");
    assert_eq!(rec["method"], "saliency");
    assert_eq!(rec["mask_shape"], serde_json::json!([224, 224]));
    let frac = rec["foreground_fraction"].as_f64().unwrap();
    eprintln!("chelsea: {rec}");
    assert!((0.05..0.8).contains(&frac), "foreground fraction {frac}");
    let (nf, nb) = (rec["seeds"]["foreground"].as_u64().unwrap(), rec["seeds"]["background"].as_u64().unwrap());
    assert!((2500..=2600).contains(&nf) && (15000..=15100).contains(&nb), "5% and 30% of 224² are seeds: {nf}, {nb}");
    assert!(rec["crop"]["width"].as_f64().unwrap() > 0.0);
    for f in ["chelsea_segment_mask.png", "chelsea_segment_overlay.png", "chelsea_segment_mask.npy", "chelsea_segment_mask_full.png", "chelsea_segment_overlay_full.png"] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    assert!((white_fraction(&out.join("chelsea_segment_mask.png")) - frac).abs() < 1e-9);
    let npy = deepviz::imageio::read_npy(&out.join("chelsea_segment_mask.npy")).unwrap();
    assert_eq!(npy.shape, [224, 224]);
    assert!(npy.data.iter().all(|&x| x == 0.0 || x == 1.0));
    assert!((npy.data.iter().sum::<f32>() as f64 / npy.data.len() as f64 - frac).abs() < 1e-9);
    let (ow, oh) = image::image_dimensions(sample).unwrap();
    assert_eq!(image::image_dimensions(out.join("chelsea_segment_mask_full.png")).unwrap(), (ow, oh));

    // the largest component: part of the same mask, one 8-connected region
    let lc = dir.join("lc");
    let o = common::ok(&["segment", "--image", sample, "--largest-component", "--device", "cpu", "--out", lc.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let part = v[0]["foreground_fraction"].as_f64().unwrap();
    eprintln!("chelsea, largest component: {part:.4} of the crop (all components: {frac:.4})");
    assert!(part > 0.0 && part <= frac);
    let m = image::open(lc.join("chelsea_segment_mask.png")).unwrap().to_rgb8();
    let whole: Vec<bool> = image::open(out.join("chelsea_segment_mask.png")).unwrap().to_rgb8().pixels().map(|p| p.0[0] == 255).collect();
    let kept: Vec<bool> = m.pixels().map(|p| p.0[0] == 255).collect();
    assert_eq!(largest_component(&whole, 224, 224).unwrap(), kept);

    // bad input: one error line, nothing written
    let corrupt = dir.join("corrupt.png");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let fresh = dir.join("fresh");
    let cases: Vec<(Vec<&str>, &str, i32)> = vec![
        (vec!["--image", sample, "--method", "sailency"], "unknown method", 1),
        (vec!["--image", sample, "--fg-quantile", "0.2", "--bg-quantile", "0.5"], "quantiles", 1),
        (vec!["--image", corrupt.to_str().unwrap()], "corrupt.png", 1),
        (vec!["--image", sample, "--iterations", "0"], "at least 1 iteration", 1),
        (vec!["--image", sample, "--method", "gradcam", "--samples", "3"], "takes no --samples", 1),
        (vec!["--image", sample, "--fg-quantile", "1.5"], "1.5", 2),
    ];
    for (args, says, code) in cases {
        let mut all = vec!["segment"];
        all.extend(args);
        all.extend(["--device", "cpu", "--out", fresh.to_str().unwrap()]);
        let o = common::run(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{all:?}: {err}");
        assert!(err.contains(says), "{all:?}: {err}");
        if code == 1 {
            assert_eq!(err.trim_end().lines().count(), 1, "{all:?}: one line: {err}");
        }
        assert!(!fresh.exists(), "{all:?} wrote nothing");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
