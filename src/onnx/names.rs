//! Module paths from the exporter's node names (see [`super`]), and the default layers.

use std::collections::HashSet;

use super::proto::{NodeProto, TensorProto};
use crate::graph::{Graph, Heads, NodeId, Op};

/// The default Grad-CAM / DeepDream layer: the last activation with a spatial map larger than
/// 1x1 at or before the output; CAM when the head is that layer → global average pooling →
/// flatten → linear (the output).
pub(super) fn heads(g: &Graph, shapes: &[Vec<usize>]) -> Heads {
    let feature = (0..=g.output).rev().find(|&i| shapes[i].len() == 4 && shapes[i][2] * shapes[i][3] > 1).unwrap_or(0);
    let out = &g.nodes[g.output];
    let chain = |id: NodeId, want: fn(&Op) -> bool| -> Option<NodeId> {
        let n = &g.nodes[id];
        (want(&n.op) && n.inputs.len() == 1).then(|| n.inputs[0])
    };
    let cam = chain(g.output, |o| matches!(o, Op::Linear { .. }))
        .and_then(|i| chain(i, |o| matches!(o, Op::Flatten)))
        .and_then(|i| chain(i, |o| matches!(o, Op::AdaptiveAvgPool([1, 1]))))
        .filter(|&f| f == feature)
        .map(|f| (g.nodes[f].name.clone(), out.name.clone()));
    let layer = g.nodes[feature].name.clone();
    Heads { gradcam_layer: layer.clone(), dream_layer: layer, cam }
}

/// The module path of every node (see the module docs).
pub(super) fn module_names(nodes: &[NodeProto], inits: &[TensorProto]) -> Vec<String> {
    let is_init: HashSet<&str> = inits.iter().map(|t| t.name()).collect();
    // scopes of `/a/a.0/conv1/Conv`: ["a", "a.0", "conv1"], op "Conv"
    let split = |n: &NodeProto| -> Option<(Vec<String>, String)> {
        let rest = n.name().strip_prefix('/')?;
        let mut parts: Vec<String> = rest.split('/').map(str::to_string).collect();
        let op = parts.pop()?;
        Some((parts, op))
    };
    let all: Vec<Option<(Vec<String>, String)>> = nodes.iter().map(split).collect();
    // raw scope paths that exist, to tell a repeated call (`relu_1` beside `relu`) from a name
    let mut seen: HashSet<Vec<String>> = HashSet::new();
    for (scopes, _) in all.iter().flatten() {
        for k in 1..=scopes.len() {
            seen.insert(scopes[..k].to_vec());
        }
    }
    let path = |scopes: &[String]| -> String {
        let mut acc = String::new();
        for (k, s) in scopes.iter().enumerate() {
            let mut s = s.as_str();
            if let Some((base, num)) = s.rsplit_once('_') {
                let mut sib = scopes[..k].to_vec();
                sib.push(base.to_string());
                if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) && seen.contains(&sib) {
                    s = base;
                }
            }
            // a scope names a child by the path from its parent's own name on (`layer1.0` in
            // `layer1`, `downsample.0` in `layer1.0.downsample`): join on the atoms they share
            let a: Vec<&str> = acc.split('.').filter(|x| !x.is_empty()).collect();
            let c: Vec<&str> = s.split('.').collect();
            let shared = (1..=a.len().min(c.len() - 1)).rev().find(|&k| a[a.len() - k..] == c[..k]).unwrap_or(0);
            acc = a.iter().chain(&c[shared..]).copied().collect::<Vec<_>>().join(".");
        }
        acc
    };
    let mut containers: HashSet<String> = HashSet::new();
    for (scopes, _) in all.iter().flatten() {
        for k in 0..scopes.len() {
            containers.insert(path(&scopes[..k]));
        }
    }
    nodes
        .iter()
        .zip(&all)
        .enumerate()
        .map(|(i, (n, parsed))| {
            let op_name = |op: &str| -> String {
                let op = match op.rsplit_once('_') {
                    Some((base, num)) if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) => base,
                    _ => op,
                };
                op.to_lowercase()
            };
            if let Some((scopes, op)) = parsed {
                let p = path(scopes);
                return match (p.is_empty(), containers.contains(&p)) {
                    (true, _) => op_name(op),
                    (false, true) => format!("{p}.{}", op_name(op)),
                    (false, false) => p,
                };
            }
            let from_weight = n.input.iter().skip(1).find_map(|x| x.strip_suffix(".weight").filter(|_| is_init.contains(x.as_str())));
            match from_weight {
                Some(p) => p.to_string(),
                None if !n.name().is_empty() => n.name().to_string(),
                None => format!("{}_{i}", n.op_type().to_lowercase()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, op: &str, inputs: &[&str]) -> NodeProto {
        NodeProto {
            name: Some(name.into()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_the_module_paths() {
        let nodes = [
            node("/stem/Conv", "Conv", &["x", "stem.weight"]),
            node("/layer4/layer4.1/conv2/Conv", "Conv", &["a", "onnx::Conv_66"]),
            node("/layer4/layer4.1/relu/Relu", "Relu", &["b"]),
            node("/layer4/layer4.1/Add", "Add", &["c", "d"]),
            node("/layer4/layer4.1/relu_1/Relu", "Relu", &["e"]),
            node("/layer4/layer4.1/Add_1", "Add", &["c", "d"]),
            node("/layer4/layer4.0/downsample/downsample.0/Conv", "Conv", &["c", "onnx::Conv_9"]),
            node("/GlobalAveragePool", "GlobalAveragePool", &["f"]),
            node("/fc/Gemm", "Gemm", &["g", "fc.weight", "fc.bias"]),
            node("Conv_12", "Conv", &["h", "head.conv.weight"]),
            node("", "Relu", &["i"]),
        ];
        let inits = vec![TensorProto { name: Some("head.conv.weight".into()), ..Default::default() }];
        let got = module_names(&nodes, &inits);
        let want = [
            "stem",
            "layer4.1.conv2",
            "layer4.1.relu",
            "layer4.1.add",
            "layer4.1.relu",
            "layer4.1.add",
            "layer4.0.downsample.0",
            "globalaveragepool",
            "fc",
            "head.conv",
            "relu_10",
        ];
        assert_eq!(got, want);
    }
}
