//! The one error type of the data module.

use std::path::PathBuf;

/// Everything that can go wrong while loading or splitting a data set.
///
/// Every variant that comes from a file names it in `origin` (the path as text, or a short name
/// such as `embedded digits.csv.gz` for in-memory data), and its message says what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file or directory is not there.
    #[error("{what} not found; looked for {}. {hint}", join_paths(looked_for))]
    Missing {
        /// What was being looked for, e.g. `Fashion-MNIST file train-images-idx3-ubyte.gz`.
        what: String,
        /// Every path that was tried.
        looked_for: Vec<PathBuf>,
        /// How to get the file.
        hint: String,
    },
    /// Reading failed for a reason other than a missing file or a corrupt gzip stream.
    #[error("cannot read {origin}: {source}")]
    Io {
        /// The file that could not be read.
        origin: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The data start with the gzip magic but do not decompress.
    #[error("corrupt or truncated gzip data in {origin}: {source}")]
    Gzip {
        /// The compressed file.
        origin: String,
        /// The error the decompressor gave.
        source: std::io::Error,
    },
    /// The file holds no data at all.
    #[error("{origin} is empty: expected {expected}")]
    Empty {
        /// The empty file.
        origin: String,
        /// What it should have held.
        expected: &'static str,
    },
    /// An IDX file starts with the wrong magic number.
    #[error("{origin}: bad IDX magic number {found:#010x}, expected {expected:#010x} ({kind})")]
    BadMagic {
        /// The file.
        origin: String,
        /// The magic number that was wanted.
        expected: u32,
        /// The magic number that was read.
        found: u32,
        /// What the expected magic stands for, e.g. `u8 images of rank 3`.
        kind: &'static str,
    },
    /// An IDX file is shorter than its header says.
    #[error("{origin}: truncated IDX {part}: expected {expected} bytes, found only {found}")]
    Truncated {
        /// The file.
        origin: String,
        /// `header` or `payload`.
        part: &'static str,
        /// How many bytes the header promises.
        expected: u64,
        /// How many bytes there are.
        found: u64,
    },
    /// An IDX file has bytes past the end its header gives.
    #[error("{origin}: IDX payload longer than its header says ({expected} bytes); corrupt file?")]
    TrailingBytes {
        /// The file.
        origin: String,
        /// How many payload bytes the header promises.
        expected: u64,
    },
    /// An IDX header claims more data than this reader will take, so nothing is allocated for it.
    #[error(
        "{origin}: IDX header claims dimensions {dims:?} ({bytes} bytes), over the limit of \
         {limit} bytes; corrupt header?"
    )]
    TooLarge {
        /// The file.
        origin: String,
        /// The dimensions the header claims.
        dims: Vec<u32>,
        /// Their product (saturating), in bytes.
        bytes: u64,
        /// The largest payload accepted.
        limit: u64,
    },
    /// An IDX header describes items (images) of no values, or of more than
    /// [`MAX_ITEM_VALUES`](crate::idx::MAX_ITEM_VALUES) each, so nothing is sized by it.
    #[error(
        "{origin}: IDX header claims dimensions {dims:?}: {values} values per item, expected 1 \
         to {limit}; corrupt header?"
    )]
    ItemSize {
        /// The file.
        origin: String,
        /// The dimensions the header claims.
        dims: Vec<u32>,
        /// Values per item: the product of all dimensions but the first (saturating).
        values: u64,
        /// The most accepted.
        limit: u64,
    },
    /// A text file holds more bytes (after decompression) than the loader accepts: not the
    /// expected data, or a gzip bomb.
    #[error(
        "{origin}: more than {limit} bytes of text (after decompression), more than this loader \
         accepts; not the expected data?"
    )]
    TextTooLong {
        /// The file.
        origin: String,
        /// The most bytes accepted.
        limit: u64,
    },
    /// The path is a directory, a FIFO, a device or a socket, which a loader does not read.
    #[error("{origin} is not a regular file (it is a directory, FIFO, device or socket); refusing to read it")]
    NotAFile {
        /// The path.
        origin: String,
    },
    /// The image and label files hold different numbers of items.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        /// The image file.
        images: String,
        /// How many images it holds.
        n_images: usize,
        /// The label file.
        labels: String,
        /// How many labels it holds.
        n_labels: usize,
    },
    /// Two files that should describe the same kind of example have different shapes.
    #[error("{origin} has {found} features per example, but {other} has {expected}")]
    FeatureMismatch {
        /// The file with the unexpected shape.
        origin: String,
        /// Its number of features.
        found: usize,
        /// The file it was compared with.
        other: String,
        /// That file's number of features.
        expected: usize,
    },
    /// A label is not below the number of classes.
    #[error("{origin}, {at}: label {label} out of range (there are {n_classes} classes, 0..{n_classes})")]
    Label {
        /// The file.
        origin: String,
        /// Where: `line 12` for CSV, `item 12` for IDX.
        at: String,
        /// The label read.
        label: u64,
        /// The number of classes.
        n_classes: usize,
    },
    /// A CSV field is not a number (or not an integer, for the label).
    #[error("{origin}, line {line}, column {column}: cannot parse {text:?} as {wanted}")]
    CsvParse {
        /// The file.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// 1-based column number.
        column: usize,
        /// The field as read (cut to 40 characters).
        text: String,
        /// What it should have been.
        wanted: &'static str,
    },
    /// A CSV line has the wrong number of fields.
    #[error("{origin}, line {line}: expected {expected} columns, found {found}")]
    Columns {
        /// The file.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// How many columns there should be.
        expected: usize,
        /// How many there are.
        found: usize,
    },
    /// A pixel value is outside the range of its format.
    #[error("{origin}, line {line}, column {column}: pixel value {value} outside 0..={max}")]
    PixelRange {
        /// The file.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// 1-based column number.
        column: usize,
        /// The value read.
        value: f32,
        /// The largest allowed value.
        max: f32,
    },
    /// The validation fraction is not a finite number in `[0, 1)`.
    #[error("validation fraction must be a finite number in [0, 1), got {0}")]
    BadFraction(f64),
    /// A [`Dataset`](crate::Dataset) was built from parts that do not fit together.
    #[error("inconsistent data set: {0}")]
    Shape(String),
    /// A [`TeacherSpec`](crate::teacher_student::TeacherSpec) that cannot be built.
    #[error("invalid teacher: {0}")]
    BadTeacher(String),
}

fn join_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_names_every_path_and_the_hint() {
        let e = DataError::Missing {
            what: "thing".into(),
            looked_for: vec!["/a/x.gz".into(), "/a/x".into()],
            hint: "Get it.".into(),
        };
        assert_eq!(
            e.to_string(),
            "thing not found; looked for /a/x.gz and /a/x. Get it."
        );
    }

    #[test]
    fn bad_magic_shows_hex() {
        let e = DataError::BadMagic {
            origin: "f".into(),
            expected: 0x803,
            found: 0x1234,
            kind: "u8 images of rank 3",
        };
        assert!(e.to_string().contains("0x00001234"), "{e}");
        assert!(e.to_string().contains("0x00000803"), "{e}");
    }
}
