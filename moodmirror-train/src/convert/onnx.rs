//! Just enough of ONNX's protobuf encoding to read a convolutional net's graph and weights:
//! used once, by `moodmirror convert-yunet`, to turn YuNet's ONNX export into safetensors.
//! Nothing at run time reads ONNX.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("the protobuf data ends inside a field (byte {0})")]
    Truncated(usize),
    #[error("unsupported protobuf wire type {wire} at byte {at}")]
    WireType { wire: u64, at: usize },
    #[error("tensor `{name}` has {values} values for dims {dims:?}")]
    Size { name: String, values: usize, dims: Vec<usize> },
    #[error("tensor `{0}` keeps its data in an external file, which is not supported")]
    External(String),
    #[error("the model has no graph")]
    NoGraph,
    #[error("a name or string is not UTF-8")]
    Utf8,
}

type Result<T> = std::result::Result<T, OnnxError>;

/// A float32 initializer.
#[derive(Debug, Clone)]
pub struct Initializer {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// A graph node with its integer and integer-list attributes (what convolutions carry).
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub op_type: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub ints: HashMap<String, Vec<i64>>,
}

#[derive(Debug, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub initializers: HashMap<String, Initializer>,
}

/// One protobuf field: its number and value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
    Fixed64,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.data.get(self.at).ok_or(OnnxError::Truncated(self.at))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(OnnxError::Truncated(self.at))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len()).ok_or(OnnxError::Truncated(self.at))?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>> {
        if self.at >= self.data.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| OnnxError::Truncated(self.at))?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            wire => return Err(OnnxError::WireType { wire, at: self.at }),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn string(bytes: &[u8]) -> Result<String> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| OnnxError::Utf8)
}

/// A repeated int64 field, packed or not.
fn push_ints(value: &Value, out: &mut Vec<i64>) -> Result<()> {
    match value {
        Value::Varint(v) => out.push(*v as i64),
        Value::Bytes(b) => {
            let mut r = Reader::new(b);
            while r.at < b.len() {
                out.push(r.varint()? as i64);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Reads the graph of an ONNX `ModelProto`: its nodes in order and its float32 initializers
/// (other initializers are left out).
pub fn read_graph(model: &[u8]) -> Result<Graph> {
    let mut r = Reader::new(model);
    while let Some((field, value)) = r.next_field()? {
        if let (7, Value::Bytes(graph)) = (field, value) {
            return parse_graph(graph);
        }
    }
    Err(OnnxError::NoGraph)
}

fn parse_graph(data: &[u8]) -> Result<Graph> {
    let mut graph = Graph::default();
    let mut r = Reader::new(data);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(node)) => graph.nodes.push(parse_node(node)?),
            (5, Value::Bytes(tensor)) => {
                // Integer constants (shapes for reshapes) are not weights.
                if let Some((name, init)) = parse_tensor(tensor)? {
                    graph.initializers.insert(name, init);
                }
            }
            _ => {}
        }
    }
    Ok(graph)
}

fn parse_node(data: &[u8]) -> Result<Node> {
    let mut node = Node::default();
    let mut r = Reader::new(data);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(s)) => node.inputs.push(string(s)?),
            (2, Value::Bytes(s)) => node.outputs.push(string(s)?),
            (4, Value::Bytes(s)) => node.op_type = string(s)?,
            (5, Value::Bytes(attr)) => {
                let (name, ints) = parse_int_attribute(attr)?;
                if !ints.is_empty() {
                    node.ints.insert(name, ints);
                }
            }
            _ => {}
        }
    }
    Ok(node)
}

/// An attribute's name and its `i` / `ints` values (empty for other kinds).
fn parse_int_attribute(data: &[u8]) -> Result<(String, Vec<i64>)> {
    let (mut name, mut ints) = (String::new(), Vec::new());
    let mut r = Reader::new(data);
    while let Some((field, value)) = r.next_field()? {
        match (field, &value) {
            (1, Value::Bytes(s)) => name = string(s)?,
            (3, Value::Varint(v)) => ints.push(*v as i64),
            (8, _) => push_ints(&value, &mut ints)?,
            _ => {}
        }
    }
    Ok((name, ints))
}

/// A float32 tensor's name and values; `None` for other data types.
fn parse_tensor(data: &[u8]) -> Result<Option<(String, Initializer)>> {
    let (mut name, mut dims, mut data_type) = (String::new(), Vec::new(), 1i64);
    let (mut raw, mut floats, mut external) = (None, Vec::new(), false);
    let mut r = Reader::new(data);
    while let Some((field, value)) = r.next_field()? {
        match (field, &value) {
            (1, _) => push_ints(&value, &mut dims)?,
            (2, Value::Varint(v)) => data_type = *v as i64,
            (4, Value::Bytes(b)) => floats.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            (4, Value::Fixed32(v)) => floats.push(f32::from_bits(*v)),
            (8, Value::Bytes(s)) => name = string(s)?,
            (9, Value::Bytes(b)) => raw = Some(*b),
            (14, Value::Varint(1)) => external = true,
            _ => {}
        }
    }
    if external {
        return Err(OnnxError::External(name));
    }
    if data_type != 1 {
        return Ok(None);
    }
    let data = match raw {
        Some(b) => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        None => floats,
    };
    let dims: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
    if dims.iter().product::<usize>() != data.len() {
        return Err(OnnxError::Size { name, values: data.len(), dims });
    }
    Ok(Some((name, Initializer { dims, data })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    #[test]
    fn reads_a_conv_node_and_its_weight() {
        let mut tensor = Vec::new();
        let mut dims = Vec::new();
        varint(2, &mut dims);
        varint(1, &mut dims);
        bytes_field(1, &dims, &mut tensor);
        bytes_field(8, b"w", &mut tensor);
        let raw: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes_field(9, &raw, &mut tensor);
        let mut attr = Vec::new();
        bytes_field(1, b"group", &mut attr);
        varint(3 << 3, &mut attr);
        varint(16, &mut attr);
        let mut node = Vec::new();
        bytes_field(1, b"x", &mut node);
        bytes_field(1, b"w", &mut node);
        bytes_field(2, b"y", &mut node);
        bytes_field(4, b"Conv", &mut node);
        bytes_field(5, &attr, &mut node);
        let mut graph = Vec::new();
        bytes_field(1, &node, &mut graph);
        bytes_field(5, &tensor, &mut graph);
        let mut model = Vec::new();
        varint(1 << 3, &mut model);
        varint(7, &mut model);
        bytes_field(7, &graph, &mut model);

        let g = read_graph(&model).unwrap();
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(g.nodes[0].op_type, "Conv");
        assert_eq!(g.nodes[0].inputs, ["x", "w"]);
        assert_eq!(g.nodes[0].ints["group"], [16]);
        assert_eq!(g.initializers["w"].dims, [2, 1]);
        assert_eq!(g.initializers["w"].data, [1.5, -2.0]);
        // Every cut of the file is an error, never a panic.
        for cut in 0..model.len() {
            let _ = read_graph(&model[..cut]);
        }
        assert!(read_graph(&model[..model.len() - 3]).is_err());
    }
}
