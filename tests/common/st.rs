//! Writing `.safetensors` files in tests, and the golden files' deterministic weights
//! (scripts/golden/README.md: counter-based uniforms, one stream per tensor name).

use safetensors::Dtype;

pub const SEED: u64 = 0x5EED;

pub fn fnv1a64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// uniforms in [0, 1), each exactly k·2^-24 (scripts/golden/nets.py `uniforms`)
pub fn uniforms(name: &str, n: usize) -> impl Iterator<Item = f64> {
    let key = fnv1a64(name) ^ SEED;
    (0..n as u64).map(move |i| {
        let mut z = key.wrapping_add((i + 1).wrapping_mul(0x9E3779B97F4A7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^= z >> 31;
        (z >> 40) as f64 * (1.0 / (1u64 << 24) as f64)
    })
}

/// The value of a state-dict tensor under the golden init rules, as little-endian bytes.
pub fn init_bytes(name: &str, shape: &[usize]) -> (Dtype, Vec<u8>) {
    let n: usize = shape.iter().product();
    if name.ends_with("num_batches_tracked") {
        return (Dtype::I64, vec![0u8; 8 * n.max(1)]);
    }
    let f: Box<dyn Fn(f64) -> f64> = if name.ends_with(".weight") && shape.len() >= 2 {
        let a = (6.0 / shape[1..].iter().product::<usize>() as f64).sqrt();
        Box::new(move |u| (2.0 * u - 1.0) * a)
    } else if name.ends_with(".weight") || name.ends_with(".running_var") {
        Box::new(|u| 0.5 + u)
    } else {
        Box::new(|u| (2.0 * u - 1.0) * 0.1)
    };
    (Dtype::F32, uniforms(name, n).flat_map(|u| (f(u) as f32).to_le_bytes()).collect())
}

/// A .safetensors file in memory.
pub fn safetensors_bytes(tensors: &[(String, Vec<usize>, Dtype, Vec<u8>)], meta: &[(&str, &str)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let m: serde_json::Map<String, serde_json::Value> = meta.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
    header.insert("__metadata__".into(), m.into());
    let mut off = 0;
    for (name, shape, dtype, data) in tensors {
        let dt = format!("{dtype:?}");
        header.insert(name.clone(), serde_json::json!({"dtype": dt, "shape": shape, "data_offsets": [off, off + data.len()]}));
        off += data.len();
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}


/// One tensor of a `.safetensors` file being built: name, shape, dtype, little-endian bytes.
pub type Entry = (String, Vec<usize>, Dtype, Vec<u8>);

/// A golden fixture's state-dict tensor list (its `params` metadata: name, shape) and `arch`.
pub fn fixture_params(name: &str) -> (Vec<(String, Vec<usize>)>, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden").join(format!("{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    let params: Vec<(String, Vec<usize>, String)> = serde_json::from_str(&meta["params"]).unwrap();
    (params.into_iter().map(|(n, s, _)| (n, s)).collect(), meta["arch"].clone())
}

/// The state dict of that random-weight model (values from `init_bytes`) and its `arch`.
pub fn fixture_state_dict(name: &str) -> (Vec<Entry>, String) {
    let (params, arch) = fixture_params(name);
    let entries = params
        .into_iter()
        .map(|(n, s)| {
            let (d, b) = init_bytes(&n, &s);
            (n, s, d, b)
        })
        .collect();
    (entries, arch)
}

/// That model, loaded through the normal loader from an in-memory `.safetensors` file.
pub fn fixture_model(name: &str) -> deepviz::model::Model {
    let (entries, arch) = fixture_state_dict(name);
    deepviz::model::Model::from_bytes(&safetensors_bytes(&entries, &[("arch", &arch)]), name, None)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The F32 tensors of a `.safetensors` fixture by name, and its `__metadata__`.
pub fn read_fixture(path: &std::path::Path) -> (std::collections::HashMap<String, deepviz::Tensor>, std::collections::HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let meta = safetensors::SafeTensors::read_metadata(&bytes).unwrap().1.metadata().clone().unwrap_or_default();
    let t = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.dtype(), Dtype::F32, "{}: tensor {k}", path.display());
            let data = v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            (k, deepviz::Tensor::new(v.shape().to_vec(), data).unwrap())
        })
        .collect();
    (t, meta)
}
