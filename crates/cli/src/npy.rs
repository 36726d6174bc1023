//! Reading and writing NumPy `.npy` files (format versions 1, 2 and 3).
//!
//! Written here rather than taken from a crate so that every malformed input gets an error that
//! names what is wrong (truncation, dtype, header), big-endian and Fortran-ordered arrays are
//! read correctly, and the reader can be fuzzed on its own.

use std::{fs, path::Path};

use losskit_core::input::{HostArray, HostValues};

const MAGIC: &[u8] = b"\x93NUMPY";

/// A `.npy` problem, with the file's name in its message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NpyError(pub String);

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<HostArray, NpyError> {
    let bytes = fs::read(path)
        .map_err(|error| NpyError(format!("cannot read {}: {error}", path.display())))?;
    parse_npy(&bytes)
        .map_err(|NpyError(message)| NpyError(format!("{}: {message}", path.display())))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Float,
    Int,
    Unsigned,
    Bool,
}

/// Parses the bytes of a `.npy` file.
pub fn parse_npy(bytes: &[u8]) -> Result<HostArray, NpyError> {
    let (header, data_start) = header_text(bytes)?;
    let descr = header_string(header, "descr")?;
    let fortran_order = header_bool(header, "fortran_order")?;
    let shape = header_shape(header)?;
    let (little_endian, kind, size) = parse_descr(&descr)?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
        .ok_or_else(|| NpyError(format!("shape {shape:?} is too large")))?;
    let expected_bytes = count
        .checked_mul(size)
        .ok_or_else(|| NpyError(format!("shape {shape:?} is too large")))?;
    let data = &bytes[data_start..];
    if data.len() < expected_bytes {
        return Err(NpyError(format!(
            "truncated: shape {shape:?} of {descr} needs {expected_bytes} data bytes, the file has {}",
            data.len()
        )));
    }
    let element = |i: usize| -> [u8; 8] {
        let mut raw = [0u8; 8];
        let chunk = &data[i * size..(i + 1) * size];
        if little_endian {
            raw[..size].copy_from_slice(chunk);
        } else {
            for (j, byte) in chunk.iter().rev().enumerate() {
                raw[j] = *byte;
            }
        }
        raw
    };
    let values = decode_values(kind, size, element_order(&shape, fortran_order), element)?;
    Ok(HostArray { shape, values })
}

/// The header's text (after the magic, version and length) and where the data starts.
fn header_text(bytes: &[u8]) -> Result<(&str, usize), NpyError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(NpyError(
            "not a .npy file (missing the \\x93NUMPY magic)".into(),
        ));
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(NpyError("truncated .npy header".into()));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        other => {
            return Err(NpyError(format!(
                "unsupported .npy format version {other}; expected 1, 2 or 3"
            )));
        }
    };
    let data_start = header_start
        .checked_add(header_len)
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| NpyError("truncated .npy header".into()))?;
    let header = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|_| NpyError(".npy header is not text".into()))?;
    Ok((header, data_start))
}

/// The elements at `order`, each read as little-endian bytes by `element`, as host values.
fn decode_values(
    kind: Kind,
    size: usize,
    order: Box<dyn Iterator<Item = usize> + '_>,
    element: impl Fn(usize) -> [u8; 8],
) -> Result<HostValues, NpyError> {
    Ok(match kind {
        Kind::Float => HostValues::Float(
            order
                .map(|i| {
                    let raw = element(i);
                    match size {
                        2 => half_to_f64(u16::from_le_bytes([raw[0], raw[1]])),
                        4 => f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as f64,
                        _ => f64::from_le_bytes(raw),
                    }
                })
                .collect(),
        ),
        Kind::Int => HostValues::Int(
            order
                .map(|i| {
                    let raw = element(i);
                    match size {
                        1 => raw[0] as i8 as i64,
                        2 => i16::from_le_bytes([raw[0], raw[1]]) as i64,
                        4 => i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as i64,
                        _ => i64::from_le_bytes(raw),
                    }
                })
                .collect(),
        ),
        Kind::Unsigned | Kind::Bool => {
            let values: Vec<u64> = order.map(|i| u64::from_le_bytes(element(i))).collect();
            if let Some(big) = values.iter().find(|v| **v > i64::MAX as u64) {
                return Err(NpyError(format!(
                    "value {big} does not fit a signed 64-bit integer"
                )));
            }
            HostValues::Int(values.into_iter().map(|v| v as i64).collect())
        }
    })
}

/// Indices into the stored data, in C (row-major) order of the logical array.
fn element_order(shape: &[usize], fortran_order: bool) -> Box<dyn Iterator<Item = usize> + '_> {
    let count: usize = shape.iter().product();
    if !fortran_order || shape.len() < 2 {
        return Box::new(0..count);
    }
    let mut strides = vec![1usize; shape.len()];
    for axis in 1..shape.len() {
        strides[axis] = strides[axis - 1] * shape[axis - 1];
    }
    Box::new((0..count).map(move |linear| {
        let mut rest = linear;
        let mut offset = 0;
        for axis in (0..shape.len()).rev() {
            offset += (rest % shape[axis]) * strides[axis];
            rest /= shape[axis];
        }
        offset
    }))
}

fn half_to_f64(bits: u16) -> f64 {
    let sign = if bits >> 15 == 1 { -1.0 } else { 1.0 };
    let exponent = ((bits >> 10) & 0x1f) as i32;
    let fraction = (bits & 0x3ff) as f64;
    sign * match exponent {
        0 => fraction * 2f64.powi(-24),
        31 if fraction == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + fraction / 1024.0) * 2f64.powi(e - 15),
    }
}

fn parse_descr(descr: &str) -> Result<(bool, Kind, usize), NpyError> {
    let unsupported = || {
        NpyError(format!(
            "unsupported dtype `{descr}`; expected float16/32/64, (u)int8/16/32/64 or bool"
        ))
    };
    let mut chars = descr.chars();
    let order = chars.next().ok_or_else(unsupported)?;
    let little_endian = match order {
        '<' | '|' | '=' => true,
        '>' => false,
        _ => return Err(unsupported()),
    };
    let code = chars.next().ok_or_else(unsupported)?;
    let size: usize = chars.as_str().parse().map_err(|_| unsupported())?;
    let kind = match (code, size) {
        ('f', 2 | 4 | 8) => Kind::Float,
        ('i', 1 | 2 | 4 | 8) => Kind::Int,
        ('u', 1 | 2 | 4 | 8) => Kind::Unsigned,
        ('b', 1) => Kind::Bool,
        _ => return Err(unsupported()),
    };
    Ok((little_endian, kind, size))
}

fn header_value<'a>(header: &'a str, key: &str) -> Result<&'a str, NpyError> {
    let missing = || NpyError(format!(".npy header has no `{key}`"));
    let quoted = format!("'{key}'");
    let start = header
        .find(&quoted)
        .or_else(|| header.find(&format!("\"{key}\"")))
        .ok_or_else(missing)?;
    let rest = &header[start + quoted.len()..];
    let colon = rest.find(':').ok_or_else(missing)?;
    Ok(rest[colon + 1..].trim_start())
}

fn header_string(header: &str, key: &str) -> Result<String, NpyError> {
    let value = header_value(header, key)?;
    let quote = value
        .chars()
        .next()
        .filter(|c| *c == '\'' || *c == '"')
        .ok_or_else(|| NpyError(format!(".npy header: `{key}` is not a string")))?;
    let end = value[1..]
        .find(quote)
        .ok_or_else(|| NpyError(format!(".npy header: `{key}` is not a string")))?;
    Ok(value[1..1 + end].to_string())
}

fn header_bool(header: &str, key: &str) -> Result<bool, NpyError> {
    let value = header_value(header, key)?;
    if value.starts_with("True") {
        Ok(true)
    } else if value.starts_with("False") {
        Ok(false)
    } else {
        Err(NpyError(format!(
            ".npy header: `{key}` is not True or False"
        )))
    }
}

fn header_shape(header: &str) -> Result<Vec<usize>, NpyError> {
    let value = header_value(header, "shape")?;
    let bad = || NpyError(".npy header: `shape` is not a tuple of integers".into());
    if !value.starts_with('(') {
        return Err(bad());
    }
    let end = value.find(')').ok_or_else(bad)?;
    value[1..end]
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| bad())
        })
        .collect()
}

/// Encodes float32 values of `shape` as a version-1 `.npy` file.
pub fn encode_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + header.len() + values.len() * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for value in values {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_float32() {
        let bytes = encode_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!((bytes.len() - 24) % 64, 0, "data starts 64-byte aligned");
        let array = parse_npy(&bytes).unwrap();
        assert_eq!(array.shape, vec![2, 3]);
        assert_eq!(
            array.values,
            HostValues::Float(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        );
    }

    fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn reads_big_endian_and_fortran_order() {
        let data: Vec<u8> = [1i32, 2, 3, 4, 5, 6]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let bytes = with_header(
            "{'descr': '>i4', 'fortran_order': True, 'shape': (2, 3), }\n",
            &data,
        );
        let array = parse_npy(&bytes).unwrap();
        // Fortran order stores columns first: [[1, 3, 5], [2, 4, 6]].
        assert_eq!(array.values, HostValues::Int(vec![1, 3, 5, 2, 4, 6]));
    }

    #[test]
    fn names_each_problem() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"hello".to_vec(), "not a .npy file"),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
                    &[0; 8],
                ),
                "truncated",
            ),
            (
                with_header(
                    "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
                    &[0; 8],
                ),
                "unsupported dtype",
            ),
            (
                with_header("{'descr': '<f4', 'fortran_order': False, }", &[]),
                "no `shape`",
            ),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (a,), }",
                    &[],
                ),
                "tuple of integers",
            ),
        ];
        for (bytes, expected) in cases {
            let error = parse_npy(&bytes).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error} should contain {expected}"
            );
        }
    }
}
