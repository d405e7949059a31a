//! The UCI optical digits: 1,797 handwritten digits as 8x8 images with pixel values 0-16
//! (scikit-learn's copy, embedded in the crate; see `data/LICENSE-digits.txt` in this crate).
//!
//! The CSV format: no header; each line holds 64 pixel values (row by row) and then the label
//! 0-9, separated by commas. Pixels are scaled to `[0, 1]` by dividing by 16.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::gz::Source;
use crate::{DataError, Dataset};

/// The number of pixels (features) per digit: an 8x8 image.
pub const N_FEATURES: usize = 64;
/// The number of classes, digits 0-9.
pub const N_CLASSES: usize = 10;
/// The largest pixel value in the CSV.
pub const MAX_PIXEL: f32 = 16.0;

/// The scikit-learn copy of the data, gzip-compressed, compiled into the crate.
static EMBEDDED: &[u8] = include_bytes!("../data/digits.csv.gz");

const EMBEDDED_NAME: &str = "embedded digits.csv.gz";

/// The longest CSV line accepted, in bytes.
const MAX_LINE: u64 = 64 * 1024;

/// The most CSV text read, in bytes after decompression: 16 MiB, about 100,000 digits (the
/// embedded copy is 0.5 MB), so that a small gzip bomb cannot fill the memory.
pub const MAX_CSV_BYTES: u64 = 16 << 20;

/// The embedded digits: 1,797 examples, 64 features in `[0, 1]`, 10 classes.
///
/// Needs no file: the data are compiled into the crate. It returns a `Result` only because it
/// uses the same parser as [`load_digits_from`]; it does not fail.
///
/// ```
/// let ds = dfdx_grow_data::digits::digits().unwrap();
/// assert_eq!((ds.len(), ds.n_features, ds.n_classes), (1797, 64, 10));
/// ```
pub fn digits() -> Result<Dataset, DataError> {
    parse(Source::new(EMBEDDED, EMBEDDED_NAME.to_string())?)
}

/// Loads the digits CSV from `path`, gzip-compressed (detected from its first bytes) or plain.
///
/// A missing file gives [`DataError::Missing`], which names the path and where to get the file.
pub fn load_digits_from(path: impl AsRef<Path>) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    crate::idx::refuse_non_regular(path)?;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::Missing {
                what: "digits CSV".into(),
                looked_for: vec![path.to_path_buf()],
                hint: "The crate embeds a copy (dfdx_grow_data::digits::digits()); another one \
                       is sklearn/datasets/data/digits.csv.gz inside the scikit-learn wheel \
                       (pip download --no-deps scikit-learn)."
                    .into(),
            })
        }
        Err(source) => return Err(DataError::Io { origin, source }),
    };
    parse(Source::new(file, origin)?)
}

/// Parses digits CSV text (not compressed) from `reader`; error messages call it `digits CSV`.
///
/// ```
/// use dfdx_grow_data::digits::parse_digits_csv;
///
/// let line = format!("{}16,3\n", "0,".repeat(63));
/// let ds = parse_digits_csv(line.as_bytes()).unwrap();
/// assert_eq!(ds.labels, vec![3]);
/// assert_eq!(ds.row(0)[63], 1.0);
///
/// let err = parse_digits_csv("1,2,3\n".as_bytes()).unwrap_err();
/// assert!(err.to_string().contains("line 1"));
/// ```
pub fn parse_digits_csv(reader: impl Read) -> Result<Dataset, DataError> {
    let origin = "digits CSV";
    parse_csv(BufReader::new(reader), origin, |source| DataError::Io {
        origin: origin.into(),
        source,
    })
}

fn parse(source: Source<'_>) -> Result<Dataset, DataError> {
    let origin = source.origin().to_string();
    // Read errors of a gzip stream are reported as gzip errors.
    let read_error = source.error_mapper();
    parse_csv(BufReader::new(source), &origin, read_error)
}

fn parse_csv(
    mut reader: impl BufRead,
    origin: &str,
    read_error: impl Fn(std::io::Error) -> DataError,
) -> Result<Dataset, DataError> {
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    let mut total = 0u64;
    loop {
        buf.clear();
        // The `take` bounds memory on input without newlines (a digits line is ~200 bytes).
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) => return Err(read_error(e)),
        }
        if total > MAX_CSV_BYTES {
            return Err(DataError::TextTooLong {
                origin: origin.into(),
                limit: MAX_CSV_BYTES,
            });
        }
        line_no += 1;
        if buf.len() as u64 == MAX_LINE && buf.last() != Some(&b'\n') {
            return Err(DataError::CsvParse {
                origin: origin.into(),
                line: line_no,
                column: 1,
                text: String::from_utf8_lossy(&buf[..40]).into_owned(),
                wanted: "a line shorter than 64 KiB",
            });
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            return Err(DataError::CsvParse {
                origin: origin.into(),
                line: line_no,
                column: 1,
                text: String::from_utf8_lossy(&buf).chars().take(40).collect(),
                wanted: "UTF-8 text",
            });
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let label = parse_line(line, origin, line_no, &mut features)?;
        labels.push(label);
    }
    if labels.is_empty() {
        return Err(DataError::Empty {
            origin: origin.into(),
            expected: "lines of 64 pixel values and a label",
        });
    }
    Ok(Dataset {
        features,
        labels,
        n_features: N_FEATURES,
        n_classes: N_CLASSES,
    })
}

/// Appends the scaled pixels of one non-empty line to `features` and returns its label.
fn parse_line(
    line: &str,
    origin: &str,
    line_no: usize,
    features: &mut Vec<f32>,
) -> Result<u8, DataError> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if fields.len() != N_FEATURES + 1 {
        return Err(DataError::Columns {
            origin: origin.into(),
            line: line_no,
            expected: N_FEATURES + 1,
            found: fields.len(),
        });
    }
    let parse_err = |column: usize, text: &str, wanted| DataError::CsvParse {
        origin: origin.into(),
        line: line_no,
        column,
        text: text.chars().take(40).collect(),
        wanted,
    };
    for (j, text) in fields[..N_FEATURES].iter().enumerate() {
        let value: f32 = text
            .parse()
            .map_err(|_| parse_err(j + 1, text, "a number"))?;
        if !(0.0..=MAX_PIXEL).contains(&value) {
            return Err(DataError::PixelRange {
                origin: origin.into(),
                line: line_no,
                column: j + 1,
                value,
                max: MAX_PIXEL,
            });
        }
        features.push(value / MAX_PIXEL);
    }
    let text = fields[N_FEATURES];
    let label: u64 = text
        .parse()
        .map_err(|_| parse_err(N_FEATURES + 1, text, "an integer label"))?;
    match u8::try_from(label) {
        Ok(l) if usize::from(l) < N_CLASSES => Ok(l),
        _ => Err(DataError::Label {
            origin: origin.into(),
            at: format!("line {line_no}"),
            label,
            n_classes: N_CLASSES,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(pixel: &str, label: &str) -> String {
        format!("{}{pixel},{label}\n", "0,".repeat(N_FEATURES - 1))
    }

    #[test]
    fn crlf_and_blank_lines_are_accepted() {
        let text = format!("{}\r\n\n{}", line("8", "1").trim_end(), line("0", "2"));
        let ds = parse_digits_csv(text.as_bytes()).unwrap();
        assert_eq!(ds.labels, vec![1, 2]);
        assert_eq!(ds.row(0)[63], 0.5);
    }

    #[test]
    fn negative_pixel_is_out_of_range() {
        let e = parse_digits_csv(line("-1", "0").as_bytes()).unwrap_err();
        assert!(matches!(e, DataError::PixelRange { column: 64, .. }), "{e}");
    }

    #[test]
    fn nan_pixel_is_out_of_range() {
        let e = parse_digits_csv(line("NaN", "0").as_bytes()).unwrap_err();
        assert!(matches!(e, DataError::PixelRange { .. }), "{e}");
    }

    #[test]
    fn huge_label_is_a_label_error() {
        let e = parse_digits_csv(line("0", "300").as_bytes()).unwrap_err();
        assert!(matches!(e, DataError::Label { label: 300, .. }), "{e}");
    }

    #[test]
    fn empty_input_is_an_error() {
        let e = parse_digits_csv(&b"\n\n"[..]).unwrap_err();
        assert!(matches!(e, DataError::Empty { .. }), "{e}");
    }

    #[test]
    fn endless_line_is_an_error_not_an_allocation() {
        let bytes = vec![b'1'; 200_000];
        let e = parse_digits_csv(&bytes[..]).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn non_utf8_names_the_line() {
        let mut bytes = line("0", "1").into_bytes();
        bytes.extend_from_slice(&[0xff, 0xfe, b'\n']);
        let e = parse_digits_csv(&bytes[..]).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
