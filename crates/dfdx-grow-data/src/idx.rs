//! The IDX format of MNIST and Fashion-MNIST, gzip-compressed or plain.
//!
//! An IDX file is a big-endian header — the magic number `0x0000_08RR` (type code `08` for
//! unsigned bytes, `RR` the rank), then one `u32` per dimension — followed by the values, row
//! major. Images are rank 3 (count, rows, columns), labels rank 1 (count).
//!
//! Files are checked, not trusted: a wrong magic, a payload shorter or longer than the header
//! says, a header claiming more than [`MAX_PAYLOAD`] bytes, or a broken gzip stream each give a
//! [`DataError`] naming the file, and memory grows only with data actually read.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::gz::Source;
use crate::{DataError, Dataset};

/// The largest payload read from one IDX file, in bytes (1 GiB; Fashion-MNIST's training images
/// are 47 MB).
pub const MAX_PAYLOAD: u64 = 1 << 30;

/// The most values one item (an image) of an IDX file may have: 2^20, e.g. 1024x1024 pixels
/// (Fashion-MNIST has 784). A model's first layer is sized by it, so a header claiming more is
/// refused before anything is allocated.
pub const MAX_ITEM_VALUES: u64 = 1 << 20;

/// Magic number of an IDX file of unsigned bytes with rank 3 (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with rank 1 (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Where the Debian package `dataset-fashion-mnist` installs Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// How to get Fashion-MNIST, for error messages.
const FASHION_HINT: &str = "Install it with `apt-get install dataset-fashion-mnist` (puts the \
    files in /usr/share/datasets/fashion-mnist/), or download the four files \
    train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and \
    t10k-labels-idx1-ubyte.gz from the Fashion-MNIST project (zalandoresearch/fashion-mnist on \
    GitHub) into one directory and pass that directory.";

/// An IDX array of unsigned bytes: its dimensions and its values, row major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions from the header, outermost first.
    pub dims: Vec<u32>,
    /// The values: exactly the product of `dims` of them.
    pub data: Vec<u8>,
}

/// Reads an IDX array of unsigned bytes with the given `rank` (1 to 255) from `reader`,
/// decompressing it if it starts with the gzip magic. `origin` names the data in errors.
///
/// ```
/// use dfdx_grow_data::idx::read_idx;
///
/// let bytes = [0, 0, 8, 1, 0, 0, 0, 3, 9, 0, 0];
/// let labels = read_idx(&bytes[..], "labels", 1).unwrap();
/// assert_eq!((labels.dims, labels.data), (vec![3], vec![9, 0, 0]));
///
/// let err = read_idx(&bytes[..10], "labels", 1).unwrap_err();
/// assert!(err.to_string().contains("truncated IDX payload"));
/// ```
pub fn read_idx(reader: impl Read, origin: &str, rank: u8) -> Result<IdxArray, DataError> {
    let mut src = Source::new(reader, origin.to_string())?;
    let header_len = 4 + 4 * u64::from(rank);
    let header = src.read_up_to(header_len)?;
    if header.is_empty() {
        return Err(DataError::Empty {
            origin: origin.into(),
            expected: "an IDX file",
        });
    }
    let words: Vec<u32> = header
        .chunks_exact(4)
        .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    let expected_magic = 0x0000_0800 | u32::from(rank);
    if let Some(&found) = words.first() {
        if found != expected_magic {
            return Err(DataError::BadMagic {
                origin: origin.into(),
                expected: expected_magic,
                found,
                kind: kind_name(rank),
            });
        }
    }
    if (header.len() as u64) < header_len {
        return Err(DataError::Truncated {
            origin: origin.into(),
            part: "header",
            expected: header_len,
            found: header.len() as u64,
        });
    }
    let dims = words[1..].to_vec();
    let bytes = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
        .unwrap_or(u64::MAX);
    if bytes > MAX_PAYLOAD {
        return Err(DataError::TooLarge {
            origin: origin.into(),
            dims,
            bytes,
            limit: MAX_PAYLOAD,
        });
    }
    // Checked even when the count is 0 and the payload empty: the item size alone is used to
    // size models.
    let values = dims[1.min(dims.len())..]
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
        .unwrap_or(u64::MAX);
    if values == 0 || values > MAX_ITEM_VALUES {
        return Err(DataError::ItemSize {
            origin: origin.into(),
            dims,
            values,
            limit: MAX_ITEM_VALUES,
        });
    }
    let data = src.read_up_to(bytes + 1)?;
    let found = data.len() as u64;
    if found < bytes {
        return Err(DataError::Truncated {
            origin: origin.into(),
            part: "payload",
            expected: bytes,
            found,
        });
    }
    if found > bytes {
        return Err(DataError::TrailingBytes {
            origin: origin.into(),
            expected: bytes,
        });
    }
    Ok(IdxArray { dims, data })
}

fn kind_name(rank: u8) -> &'static str {
    match rank {
        1 => "u8 labels of rank 1",
        3 => "u8 images of rank 3",
        _ => "u8 values",
    }
}

/// Loads an image file (rank 3) and a label file (rank 1) into a [`Dataset`]: one row per
/// image, pixels scaled to `[0, 1]` by dividing by 255, every label checked to be below
/// `n_classes`. Either file may be gzip-compressed.
pub fn load_idx_pair(images: &Path, labels: &Path, n_classes: usize) -> Result<Dataset, DataError> {
    let hint = "Check the path.";
    let img = read_idx(open(images, "IDX image file", hint)?, &show(images), 3)?;
    let lab = read_idx(open(labels, "IDX label file", hint)?, &show(labels), 1)?;
    pair_to_dataset(img, lab, &show(images), &show(labels), n_classes)
}

fn pair_to_dataset(
    img: IdxArray,
    lab: IdxArray,
    images: &str,
    labels: &str,
    n_classes: usize,
) -> Result<Dataset, DataError> {
    // The ranks are checked by the magic numbers, so the dims have 3 and 1 entries.
    let n_images = img.dims[0] as usize;
    let n_labels = lab.dims[0] as usize;
    if n_images == 0 {
        return Err(DataError::Empty {
            origin: images.into(),
            expected: "at least one image",
        });
    }
    if n_images != n_labels {
        return Err(DataError::CountMismatch {
            images: images.into(),
            n_images,
            labels: labels.into(),
            n_labels,
        });
    }
    if let Some((i, &l)) = lab
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::from(l) >= n_classes)
    {
        return Err(DataError::Label {
            origin: labels.into(),
            at: format!("item {i}"),
            label: u64::from(l),
            n_classes,
        });
    }
    Ok(Dataset {
        features: img.data.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels: lab.data,
        n_features: img.dims[1] as usize * img.dims[2] as usize,
        n_classes,
    })
}

/// Loads Fashion-MNIST from `dir`: `(train, test)` with 60,000 and 10,000 examples of 784
/// features in `[0, 1]` and 10 classes.
///
/// Looks for `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
/// `t10k-images-idx3-ubyte.gz` and `t10k-labels-idx1-ubyte.gz`, each also without `.gz`. A missing
/// directory or file gives [`DataError::Missing`], naming the paths tried and how to get them.
///
/// ```no_run
/// use dfdx_grow_data::idx::{load_fashion_mnist, FASHION_MNIST_DIR};
///
/// let (train, test) = load_fashion_mnist(FASHION_MNIST_DIR.as_ref())?;
/// assert_eq!((train.len(), test.len()), (60_000, 10_000));
/// # Ok::<(), dfdx_grow_data::DataError>(())
/// ```
pub fn load_fashion_mnist(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    if !dir.is_dir() {
        return Err(DataError::Missing {
            what: "Fashion-MNIST directory".into(),
            looked_for: vec![dir.to_path_buf()],
            hint: FASHION_HINT.into(),
        });
    }
    let train = load_fashion_part(dir, "train")?;
    let test = load_fashion_part(dir, "t10k")?;
    if train.n_features != test.n_features {
        return Err(DataError::FeatureMismatch {
            origin: show(&find_fashion(dir, "t10k-images-idx3-ubyte")?),
            found: test.n_features,
            other: show(&find_fashion(dir, "train-images-idx3-ubyte")?),
            expected: train.n_features,
        });
    }
    Ok((train, test))
}

/// [`load_fashion_mnist`] from [`FASHION_MNIST_DIR`], where the Debian package puts it.
pub fn fashion_mnist() -> Result<(Dataset, Dataset), DataError> {
    load_fashion_mnist(Path::new(FASHION_MNIST_DIR))
}

fn load_fashion_part(dir: &Path, prefix: &str) -> Result<Dataset, DataError> {
    let images = find_fashion(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels = find_fashion(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    load_idx_pair(&images, &labels, 10)
}

/// The path of `dir/stem.gz`, or else `dir/stem`, whichever exists.
fn find_fashion(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    let candidates = [dir.join(format!("{stem}.gz")), dir.join(stem)];
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(DataError::Missing {
            what: format!("Fashion-MNIST file {stem}.gz"),
            looked_for: candidates.to_vec(),
            hint: FASHION_HINT.into(),
        }),
    }
}

fn open(path: &Path, what: &str, hint: &str) -> Result<File, DataError> {
    refuse_non_regular(path)?;
    File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                what: what.into(),
                looked_for: vec![path.to_path_buf()],
                hint: hint.into(),
            }
        } else {
            DataError::Io {
                origin: show(path),
                source,
            }
        }
    })
}

/// Refuses a path that exists and is not a regular file before it is opened (opening a FIFO
/// blocks; reading a device never ends). A missing path is left for `open` to report.
pub(crate) fn refuse_non_regular(path: &Path) -> Result<(), DataError> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(DataError::NotAFile { origin: show(path) }),
        _ => Ok(()),
    }
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn reads_images_of_rank_3() {
        let bytes = idx(IMAGES_MAGIC, &[2, 1, 2], &[0, 255, 51, 102]);
        let a = read_idx(&bytes[..], "x", 3).unwrap();
        assert_eq!(a.dims, vec![2, 1, 2]);
        assert_eq!(a.data, vec![0, 255, 51, 102]);
    }

    #[test]
    fn labels_magic_is_rejected_for_images() {
        let bytes = idx(LABELS_MAGIC, &[1], &[0]);
        let e = read_idx(&bytes[..], "x", 3).unwrap_err();
        assert!(matches!(e, DataError::BadMagic { found: 0x801, .. }), "{e}");
    }

    #[test]
    fn short_header_is_truncated_header() {
        let bytes = idx(IMAGES_MAGIC, &[2], &[]);
        let e = read_idx(&bytes[..], "x", 3).unwrap_err();
        assert!(
            matches!(e, DataError::Truncated { part: "header", .. }),
            "{e}"
        );
    }

    #[test]
    fn overflowing_dims_are_too_large() {
        let bytes = idx(IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[]);
        let e = read_idx(&bytes[..], "x", 3).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::TooLarge {
                    bytes: u64::MAX,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn extra_bytes_are_trailing_bytes() {
        let bytes = idx(LABELS_MAGIC, &[1], &[0, 1]);
        let e = read_idx(&bytes[..], "x", 1).unwrap_err();
        assert!(
            matches!(e, DataError::TrailingBytes { expected: 1, .. }),
            "{e}"
        );
    }

    #[test]
    fn label_out_of_range_names_item() {
        let img = IdxArray {
            dims: vec![2, 1, 1],
            data: vec![0, 0],
        };
        let lab = IdxArray {
            dims: vec![2],
            data: vec![1, 10],
        };
        let e = pair_to_dataset(img, lab, "i", "l", 10).unwrap_err();
        assert!(e.to_string().contains("item 1"), "{e}");
    }
}
