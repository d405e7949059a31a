//! JSON has no NaN or infinity; these serde helpers write them as the strings `"NaN"`,
//! `"inf"`, `"-inf"` and read them back, so a diverging loss is still recorded.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Num {
    F(f64),
    S(String),
}

fn to_num(v: f64) -> Num {
    if v.is_finite() {
        Num::F(v)
    } else if v.is_nan() {
        Num::S("NaN".into())
    } else if v > 0.0 {
        Num::S("inf".into())
    } else {
        Num::S("-inf".into())
    }
}

fn from_num<E: serde::de::Error>(n: Num) -> Result<f64, E> {
    match n {
        Num::F(v) => Ok(v),
        Num::S(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            _ => Err(E::custom(format!(
                "expected a number, NaN, inf or -inf, got {s:?}"
            ))),
        },
    }
}

/// `f64` fields.
pub(crate) mod float {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        to_num(*v).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        from_num(Num::deserialize(d)?)
    }
}

/// `Option<f64>` fields.
pub(crate) mod opt_float {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        v.map(to_num).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<Num>::deserialize(d)?.map(from_num).transpose()
    }
}

/// `BTreeMap<String, f64>` fields.
pub(crate) mod float_map {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        v: &BTreeMap<String, f64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<&String, Num> = v.iter().map(|(k, v)| (k, to_num(*v))).collect();
        m.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, f64>, D::Error> {
        BTreeMap::<String, Num>::deserialize(d)?
            .into_iter()
            .map(|(k, n)| from_num(n).map(|v| (k, v)))
            .collect()
    }
}
