//! Reader for PyTorch's legacy (pre-1.6, non-zip) `torch.save` format, which candle's pickle
//! loader rejects: five pickles (magic number, protocol version, system info, the object, the
//! list of storage keys) followed by each storage as a little-endian u64 element count and its
//! raw bytes. Used to convert facenet-pytorch's MTCNN weights (`moodmirror convert-mtcnn`).

use std::collections::HashMap;
use std::io::Read;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

/// Longest pickle accepted (operations), and largest object on top of the stack (nodes): a
/// few memo look-ups of a growing list make a "pickle bomb" whose copies double each time.
const MAX_PICKLE_OPS: usize = 1 << 20;
const MAX_PICKLE_NODES: usize = 1 << 16;

/// One pickle, op by op through candle's reader, refusing what would exhaust memory or time:
/// a string longer than the rest of the file (candle allocates the announced length first) or
/// an object that grows past [`MAX_PICKLE_NODES`].
fn pickle(r: &mut std::io::Cursor<&[u8]>) -> candle_core::Result<Object> {
    let mut stack = Stack::empty();
    for _ in 0..MAX_PICKLE_OPS {
        let rest = &r.get_ref()[(r.position() as usize).min(r.get_ref().len())..];
        if let [b'X', a, b, c, d, ..] = rest {
            let len = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
            if len > rest.len() - 5 {
                candle_core::bail!("pickle string of {len} bytes, longer than the rest of the file");
            }
        }
        if stack.read(r)? {
            return stack.finalize();
        }
        if stack.stack().last().is_some_and(|top| nodes(top, MAX_PICKLE_NODES) >= MAX_PICKLE_NODES) {
            candle_core::bail!("pickle object larger than {MAX_PICKLE_NODES} values (not a state dict)");
        }
    }
    candle_core::bail!("pickle longer than {MAX_PICKLE_OPS} operations")
}

/// The number of values in `object`, counted up to `cap`.
fn nodes(object: &Object, cap: usize) -> usize {
    let mut count = 0;
    let mut pending = vec![object];
    while let Some(o) = pending.pop() {
        count += 1;
        if count >= cap {
            break;
        }
        match o {
            Object::Tuple(items) | Object::List(items) => pending.extend(items),
            Object::Dict(entries) => entries.iter().for_each(|(k, v)| pending.extend([k, v])),
            Object::Reduce { callable, args } => pending.extend([&**callable, &**args]),
            Object::Build { callable, args } => pending.extend([&**callable, &**args]),
            Object::PersistentLoad(o) => pending.push(o),
            _ => {}
        }
    }
    count
}

/// The state dict's (name, tensor) pairs, f32.
pub fn read_state_dict(bytes: &[u8]) -> candle_core::Result<Vec<(String, Tensor)>> {
    let mut r = std::io::Cursor::new(bytes);
    // The magic number (0x1950a86a20f9469cfc6c) is an 80-bit integer that candle's pickle reader
    // cannot hold; its presence as a leading integer pickle is the check.
    match pickle(&mut r) {
        Ok(Object::Long(_)) | Ok(Object::Int(_)) => {}
        _ => candle_core::bail!("not a legacy torch file (a zip-format file? use candle's pickle loader)"),
    }
    let _protocol = pickle(&mut r)?;
    let _sys_info = pickle(&mut r)?;
    let object = pickle(&mut r)?;
    let keys: Vec<String> = match pickle(&mut r)? {
        Object::List(items) | Object::Tuple(items) => items
            .into_iter()
            .map(|o| o.unicode().map_err(|o| candle_core::Error::Msg(format!("storage key {o:?}"))))
            .collect::<candle_core::Result<_>>()?,
        other => candle_core::bail!("storage keys: unexpected {other:?}"),
    };
    // Storages follow in the order of `keys`.
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for key in keys {
        let mut n = [0u8; 8];
        r.read_exact(&mut n)?;
        let numel = u64::from_le_bytes(n);
        // The size comes from the file: check it against what the file holds before allocating.
        let left = (bytes.len() as u64).saturating_sub(r.position());
        let size = numel.checked_mul(4).filter(|&s| s <= left).ok_or_else(|| {
            candle_core::Error::Msg(format!("storage {key}: {numel} elements, more than the file's remaining {left} bytes"))
        })?;
        let mut data = vec![0u8; size as usize];
        r.read_exact(&mut data)?;
        storages.insert(key, data);
    }
    let Object::Dict(entries) = object else {
        candle_core::bail!("legacy torch file does not hold a state dict");
    };
    let mut out = Vec::new();
    for (name, value) in entries {
        let Some(info) = value.into_tensor_info(name, std::path::Path::new(""))? else {
            continue;
        };
        if info.dtype != DType::F32 {
            candle_core::bail!("{}: only float32 tensors are supported, got {:?}", info.name, info.dtype);
        }
        let key = info.path.trim_start_matches('/');
        let data = storages.get(key).ok_or_else(|| candle_core::Error::Msg(format!("{}: storage {key} missing", info.name)))?;
        let floats: Vec<f32> = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let storage = Tensor::from_vec(floats, data.len() / 4, &Device::Cpu)?;
        // Apply the tensor's view (offset, shape, strides) on its storage.
        let layout = &info.layout;
        let offset = layout.start_offset() / 4;
        let dims = layout.dims().to_vec();
        // A state dict's view never has more elements than its storage (no broadcasting).
        let n = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= data.len() / 4)
            .ok_or_else(|| candle_core::Error::Msg(format!("{}: view {dims:?} is larger than its storage", info.name)))?;
        let strides = layout.stride().to_vec();
        let flat = storage.to_vec1::<f32>()?;
        let mut values = Vec::with_capacity(n);
        let mut index = vec![0usize; dims.len()];
        for _ in 0..n {
            let pos = offset + index.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>();
            values.push(*flat.get(pos).ok_or_else(|| candle_core::Error::Msg(format!("{}: view out of storage", info.name)))?);
            for d in (0..dims.len()).rev() {
                index[d] += 1;
                if index[d] < dims[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out.push((info.name, Tensor::from_vec(values, dims, &Device::Cpu)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tensors_and_strided_views_from_a_legacy_file() {
        // tests/fixtures/legacy_small.pt: made with torch 2.2 `torch.save(...,
        // _use_new_zipfile_serialization=False)` (see tests/fixtures/README.md).
        let bytes = include_bytes!("../../../tests/fixtures/legacy_small.pt");
        let dict = read_state_dict(bytes).expect("legacy file");
        let get = |name: &str| dict.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone()).expect(name);
        assert_eq!(dict.len(), 3);
        let w = get("conv.weight");
        assert_eq!(w.dims(), &[2, 3, 2, 2]);
        let flat = w.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("values");
        assert_eq!(flat, (0..24).map(|v| v as f32).collect::<Vec<_>>());
        assert_eq!(get("conv.bias").to_vec1::<f32>().expect("bias"), [0.5, -1.5]);
        // A transposed view of a 3x4 arange: rows are the original columns.
        let t = get("view.t").to_vec2::<f32>().expect("view");
        assert_eq!(t[1], [1.0, 5.0, 9.0]);
    }

    #[test]
    fn rejects_other_files() {
        assert!(read_state_dict(b"PK\x03\x04 zip file").is_err());
        assert!(read_state_dict(b"").is_err());
        let bytes = include_bytes!("../../../tests/fixtures/legacy_small.pt");
        assert!(read_state_dict(&bytes[..bytes.len() - 10]).is_err(), "truncated");
    }
}
