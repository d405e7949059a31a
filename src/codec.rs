//! How files hold floating-point values: bit for bit, as base64 of little-endian f64, so NaN
//! and infinities round-trip (JSON numbers cannot hold them) and files stay compact.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// Encodes `v` as base64 of its little-endian bytes.
pub(crate) fn encode(v: &[f64]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 8);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    STANDARD.encode(bytes)
}

/// Decodes what [`encode`] wrote.
pub(crate) fn decode(s: &str) -> Result<Vec<f64>, String> {
    let bytes = STANDARD
        .decode(s)
        .map_err(|e| format!("bad base64 float data: {e}"))?;
    if !bytes.len().is_multiple_of(8) {
        return Err(format!(
            "float data of {} bytes is not a whole number of f64 values",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// `#[serde(with = "crate::codec::f64_vec")]` for a `Vec<f64>`.
pub(crate) mod f64_vec {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        decode(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// `#[serde(with = "crate::codec::f64_vecs")]` for a `Vec<Vec<f64>>`.
pub(crate) mod f64_vecs {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[Vec<f64>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| encode(b)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f64>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| decode(s).map_err(D::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_round_trip_bit_for_bit() {
        let v = [
            1.5,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
        ];
        let back = decode(&encode(&v)).unwrap();
        assert_eq!(
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert!(decode("AAAA").is_err()); // 3 bytes
        assert!(decode("not base64!").is_err());
    }
}
