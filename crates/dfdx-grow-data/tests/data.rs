//! The data module against the real embedded digits, real Fashion-MNIST when installed, and
//! deliberately broken files.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use dfdx_grow_data::digits::{digits, load_digits_from, parse_digits_csv, MAX_CSV_BYTES};
use dfdx_grow_data::idx::{
    load_fashion_mnist, load_idx_pair, IMAGES_MAGIC, LABELS_MAGIC, MAX_ITEM_VALUES,
};
use dfdx_grow_data::{stratified_split, DataError, Dataset};
use flate2::{write::GzEncoder, Compression};

/// Class counts of the 1,797 digits, counted from the CSV with awk.
const DIGIT_CLASS_COUNTS: [usize; 10] = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180];

// ---------- helpers ----------

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "dfdx_grow_data_test_{}_{n}_{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn idx(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// `n` images of 2x2 pixels with varied values.
fn images(n: u32) -> Vec<u8> {
    let payload: Vec<u8> = (0..n * 4).map(|i| (i * 37 % 256) as u8).collect();
    idx(IMAGES_MAGIC, &[n, 2, 2], &payload)
}

fn labels(values: &[u8]) -> Vec<u8> {
    idx(LABELS_MAGIC, &[values.len() as u32], values)
}

/// Asserts that `err` matches `pred` and that its message contains every needle.
fn assert_err(err: DataError, pred: impl Fn(&DataError) -> bool, needles: &[&str]) {
    assert!(pred(&err), "unexpected variant: {err:?}");
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
    }
}

/// The digits' labels with one unique feature per row (its index), to track rows through a split.
fn indexed_digits() -> Dataset {
    let ds = digits().unwrap();
    let features = (0..ds.len()).map(|i| i as f32).collect();
    Dataset::new(features, ds.labels, 1, 10).unwrap()
}

fn ids(ds: &Dataset) -> Vec<usize> {
    ds.features.iter().map(|&f| f as usize).collect()
}

fn csv_line(pixel: &str, label: &str) -> String {
    format!("{}{pixel},{label}\n", "3,".repeat(63))
}

/// A CSV file of two good lines followed by `bad` on line 3.
fn csv_with_bad_third_line(dir: &TempDir, bad: &str) -> PathBuf {
    let text = format!("{}{}{bad}\n", csv_line("0", "1"), csv_line("16", "2"));
    dir.write("digits.csv", text.as_bytes())
}

// ---------- embedded digits ----------

#[test]
fn embedded_digits_have_1797_rows_of_64_features_and_10_classes() {
    let ds = digits().unwrap();
    assert_eq!(ds.len(), 1797);
    assert_eq!(ds.n_features, 64);
    assert_eq!(ds.n_classes, 10);
    assert_eq!(ds.features.len(), 1797 * 64);
}

#[test]
fn embedded_digit_features_are_scaled_into_unit_interval_using_full_range() {
    let ds = digits().unwrap();
    assert!(ds.features.iter().all(|f| (0.0..=1.0).contains(f)));
    assert!(ds.features.contains(&0.0));
    assert!(ds.features.contains(&1.0));
    // Every value is a multiple of 1/16.
    assert!(ds.features.iter().all(|f| (f * 16.0).fract() == 0.0));
}

#[test]
fn embedded_digit_class_counts_match_the_csv() {
    let ds = digits().unwrap();
    assert_eq!(ds.class_counts(), DIGIT_CLASS_COUNTS);
    assert!(ds.labels.iter().all(|&l| l < 10));
}

#[test]
fn embedded_digits_first_row_matches_the_csv_text() {
    let ds = digits().unwrap();
    let first = "0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,\
                 0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0";
    let want: Vec<f32> = first
        .split(',')
        .map(|v| v.parse::<f32>().unwrap() / 16.0)
        .collect();
    assert_eq!(ds.row(0), &want[..]);
    assert_eq!(ds.labels[..3], [0, 1, 2]);
}

#[test]
fn load_digits_from_reads_the_gz_file_and_its_plain_text_alike() {
    let gz_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    let from_gz = load_digits_from(&gz_path).unwrap();
    assert_eq!(from_gz, digits().unwrap());

    let mut text = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&gz_path).unwrap()),
        &mut text,
    )
    .unwrap();
    let dir = TempDir::new("plain_digits");
    let plain = load_digits_from(dir.write("digits.csv", &text)).unwrap();
    assert_eq!(plain, from_gz);
    assert_eq!(parse_digits_csv(&text[..]).unwrap(), from_gz);
}

#[test]
fn load_digits_from_missing_file_names_the_path_and_the_embedded_copy() {
    let dir = TempDir::new("missing_digits");
    let path = dir.0.join("nope.csv.gz");
    let err = load_digits_from(&path).unwrap_err();
    let shown = path.display().to_string();
    assert_err(
        err,
        |e| matches!(e, DataError::Missing { .. }),
        &[&shown, "digits()", "scikit-learn"],
    );
}

/// A gzip stream of `members` concatenated gzip members, each 1 MiB of valid digit lines (a
/// gzip file may hold several members; the loader reads them all): small compressed, large
/// decompressed.
fn digits_gzip_bomb(members: usize) -> (Vec<u8>, u64) {
    let line = csv_line("16", "7");
    let chunk = line.repeat((1 << 20) / line.len());
    let member = gzip(chunk.as_bytes());
    (member.repeat(members), (chunk.len() * members) as u64)
}

#[test]
fn a_small_gzip_that_inflates_past_the_cap_is_refused_naming_the_file() {
    let (bomb, inflated) = digits_gzip_bomb(20);
    assert!(inflated > MAX_CSV_BYTES && bomb.len() < 1 << 20);
    let dir = TempDir::new("bomb");
    let path = dir.write("digits.csv.gz", &bomb);
    let shown = path.display().to_string();
    assert_err(
        load_digits_from(&path).unwrap_err(),
        |e| matches!(e, DataError::TextTooLong { limit, .. } if *limit == MAX_CSV_BYTES),
        &[&shown, "after decompression"],
    );
    // A file of the same lines under the cap loads.
    let (small, _) = digits_gzip_bomb(2);
    let ok = load_digits_from(dir.write("small.csv.gz", &small)).unwrap();
    assert!(ok.len() > 10_000);
}

#[test]
fn plain_csv_text_past_the_cap_is_refused_too() {
    let line = csv_line("1", "2");
    let text = line.repeat(MAX_CSV_BYTES as usize / line.len() + 2);
    assert_err(
        parse_digits_csv(text.as_bytes()).unwrap_err(),
        |e| matches!(e, DataError::TextTooLong { .. }),
        &["digits CSV"],
    );
}

#[cfg(unix)]
#[test]
fn a_fifo_or_a_directory_is_refused_without_blocking() {
    let dir = TempDir::new("fifo");
    let fifo = dir.0.join("digits.csv");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let lab = dir.write("lab", &labels(&[0]));
    // Run on a thread so that a blocking open fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let (f, l, d) = (fifo.clone(), lab.clone(), dir.0.clone());
    std::thread::spawn(move || {
        let _ = tx.send((
            load_digits_from(&f).unwrap_err(),
            load_idx_pair(&f, &l, 10).unwrap_err(),
            load_digits_from(&d).unwrap_err(),
        ));
    });
    let (a, b, c) = rx
        .recv_timeout(std::time::Duration::from_secs(2))
        .expect("a loader blocked on a FIFO");
    let shown = fifo.display().to_string();
    for e in [a, b] {
        assert_err(e, |e| matches!(e, DataError::NotAFile { .. }), &[&shown]);
    }
    assert_err(
        c,
        |e| matches!(e, DataError::NotAFile { .. }),
        &["not a regular file"],
    );
}

// ---------- stratified split ----------

#[test]
fn split_sends_round_fraction_of_each_class_to_val() {
    let ds = digits().unwrap();
    let split = stratified_split(&ds, 0.2, 42).unwrap();
    // round(0.2 * count) for each class, worked out by hand (e.g. 35.6 -> 36, 34.8 -> 35).
    let want_val = vec![36, 36, 35, 37, 36, 36, 36, 36, 35, 36];
    let want_train: Vec<usize> = DIGIT_CLASS_COUNTS
        .iter()
        .zip(&want_val)
        .map(|(c, v)| c - v)
        .collect();
    assert_eq!(split.val.class_counts(), want_val);
    assert_eq!(split.train.class_counts(), want_train);
    assert_eq!(split.val.len(), 359);
    assert_eq!(split.train.n_features, 64);
    assert_eq!(split.val.n_classes, 10);
}

#[test]
fn split_is_deterministic_for_a_seed() {
    let ds = digits().unwrap();
    assert_eq!(
        stratified_split(&ds, 0.25, 7).unwrap(),
        stratified_split(&ds, 0.25, 7).unwrap()
    );
}

#[test]
fn split_differs_across_seeds() {
    let ds = indexed_digits();
    let a = stratified_split(&ds, 0.25, 1).unwrap();
    let b = stratified_split(&ds, 0.25, 2).unwrap();
    let set = |d: &Dataset| ids(d).into_iter().collect::<BTreeSet<_>>();
    assert_ne!(
        set(&a.val),
        set(&b.val),
        "different seeds chose the same val rows"
    );
}

#[test]
fn split_train_and_val_partition_the_data() {
    let ds = indexed_digits();
    let split = stratified_split(&ds, 0.3, 123).unwrap();
    let mut all = ids(&split.train);
    all.extend(ids(&split.val));
    all.sort_unstable();
    assert_eq!(
        all,
        (0..ds.len()).collect::<Vec<_>>(),
        "a row was lost or duplicated"
    );
    // Each row kept its own label.
    for part in [&split.train, &split.val] {
        for (i, id) in ids(part).into_iter().enumerate() {
            assert_eq!(part.labels[i], ds.labels[id]);
        }
    }
}

#[test]
fn split_shuffles_rows_instead_of_grouping_by_class() {
    let ds = indexed_digits();
    let split = stratified_split(&ds, 0.3, 5).unwrap();
    for part in [&split.train, &split.val] {
        assert!(!part.labels.is_sorted(), "rows come out grouped by class");
        assert!(!ids(part).is_sorted(), "rows come out in original order");
    }
}

#[test]
fn split_rejects_bad_fraction_with_the_value_in_the_message() {
    let ds = digits().unwrap();
    let err = stratified_split(&ds, 1.5, 0).unwrap_err();
    assert_err(
        err,
        |e| matches!(e, DataError::BadFraction(_)),
        &["1.5", "[0, 1)"],
    );
}

// ---------- corrupt CSV ----------

#[test]
fn csv_wrong_column_count_names_path_and_line() {
    let dir = TempDir::new("csv_columns");
    let path = csv_with_bad_third_line(&dir, "1,2,3");
    let err = load_digits_from(&path).unwrap_err();
    let shown = path.display().to_string();
    assert_err(
        err,
        |e| {
            matches!(
                e,
                DataError::Columns {
                    line: 3,
                    expected: 65,
                    found: 3,
                    ..
                }
            )
        },
        &[&shown, "line 3", "65", "found 3"],
    );
}

#[test]
fn csv_non_number_names_line_and_column() {
    let dir = TempDir::new("csv_nan");
    let path = csv_with_bad_third_line(&dir, csv_line("abc", "1").trim_end());
    let err = load_digits_from(&path).unwrap_err();
    let shown = path.display().to_string();
    assert_err(
        err,
        |e| {
            matches!(
                e,
                DataError::CsvParse {
                    line: 3,
                    column: 64,
                    ..
                }
            )
        },
        &[&shown, "line 3", "column 64", "\"abc\""],
    );
}

#[test]
fn csv_pixel_17_is_out_of_range_and_names_the_line() {
    let dir = TempDir::new("csv_17");
    let path = csv_with_bad_third_line(&dir, csv_line("17", "1").trim_end());
    let err = load_digits_from(&path).unwrap_err();
    let shown = path.display().to_string();
    assert_err(
        err,
        |e| matches!(e, DataError::PixelRange { line: 3, .. }),
        &[&shown, "line 3", "17", "0..=16"],
    );
}

#[test]
fn csv_label_10_is_out_of_range_and_names_the_line() {
    let dir = TempDir::new("csv_label");
    let path = csv_with_bad_third_line(&dir, csv_line("1", "10").trim_end());
    let err = load_digits_from(&path).unwrap_err();
    let shown = path.display().to_string();
    assert_err(
        err,
        |e| matches!(e, DataError::Label { label: 10, .. }),
        &[&shown, "line 3", "label 10"],
    );
}

#[test]
fn csv_errors_from_a_reader_name_the_line_too() {
    let text = csv_line("1", "x");
    let err = parse_digits_csv(text.as_bytes()).unwrap_err();
    assert_err(
        err,
        |e| {
            matches!(
                e,
                DataError::CsvParse {
                    line: 1,
                    column: 65,
                    ..
                }
            )
        },
        &["digits CSV", "line 1", "integer label"],
    );
}

// ---------- IDX ----------

#[test]
fn idx_pair_loads_gzipped_and_plain_files_scaled_by_255() {
    let dir = TempDir::new("idx_ok");
    let img = dir.write("img.gz", &gzip(&images(3)));
    let lab = dir.write("lab", &labels(&[9, 0, 3]));
    let ds = load_idx_pair(&img, &lab, 10).unwrap();
    assert_eq!((ds.len(), ds.n_features, ds.n_classes), (3, 4, 10));
    assert_eq!(ds.labels, vec![9, 0, 3]);
    assert_eq!(ds.row(0), &[0.0, 37.0 / 255.0, 74.0 / 255.0, 111.0 / 255.0]);
}

#[test]
fn idx_bad_magic_names_the_path_and_both_numbers() {
    let dir = TempDir::new("idx_magic");
    let img = dir.write("img", &idx(0x0000_0d03, &[1, 2, 2], &[0; 4]));
    let lab = dir.write("lab", &labels(&[0]));
    let err = load_idx_pair(&img, &lab, 10).unwrap_err();
    let shown = img.display().to_string();
    assert_err(
        err,
        |e| {
            matches!(
                e,
                DataError::BadMagic {
                    found: 0xd03,
                    expected: 0x803,
                    ..
                }
            )
        },
        &[&shown, "0x00000d03", "0x00000803"],
    );
}

#[test]
fn idx_truncated_payload_names_the_path_and_sizes() {
    let dir = TempDir::new("idx_trunc");
    let mut bytes = images(3);
    bytes.truncate(bytes.len() - 5);
    let img = dir.write("img", &bytes);
    let lab = dir.write("lab", &labels(&[0, 1, 2]));
    let err = load_idx_pair(&img, &lab, 10).unwrap_err();
    let shown = img.display().to_string();
    assert_err(
        err,
        |e| {
            matches!(
                e,
                DataError::Truncated {
                    part: "payload",
                    expected: 12,
                    found: 7,
                    ..
                }
            )
        },
        &[&shown, "truncated", "12", "7"],
    );
}

#[test]
fn idx_truncated_gzip_is_a_gzip_error_naming_the_path() {
    let dir = TempDir::new("idx_gz");
    // Incompressible-ish payload, so that cutting the stream cuts real data.
    let payload: Vec<u8> = (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let z = gzip(&idx(IMAGES_MAGIC, &[1000, 2, 2], &payload));
    let img = dir.write("img.gz", &z[..z.len() / 2]);
    let lab = dir.write("lab", &labels(&[0; 1000]));
    let err = load_idx_pair(&img, &lab, 10).unwrap_err();
    let shown = img.display().to_string();
    assert_err(
        err,
        |e| matches!(e, DataError::Gzip { .. }),
        &[&shown, "gzip"],
    );
}

#[test]
fn idx_count_mismatch_names_both_files_and_counts() {
    let dir = TempDir::new("idx_count");
    let img = dir.write("img", &images(3));
    let lab = dir.write("lab", &labels(&[0, 1]));
    let err = load_idx_pair(&img, &lab, 10).unwrap_err();
    let (si, sl) = (img.display().to_string(), lab.display().to_string());
    assert_err(
        err,
        |e| {
            matches!(
                e,
                DataError::CountMismatch {
                    n_images: 3,
                    n_labels: 2,
                    ..
                }
            )
        },
        &[&si, &sl, "3 images", "2 labels"],
    );
}

#[test]
fn idx_huge_claimed_count_is_rejected_without_allocating() {
    let dir = TempDir::new("idx_huge");
    let img = dir.write("img", &idx(IMAGES_MAGIC, &[u32::MAX, 28, 28], &[0; 100]));
    let lab = dir.write("lab", &labels(&[0]));
    let err = load_idx_pair(&img, &lab, 10).unwrap_err();
    let shown = img.display().to_string();
    assert_err(
        err,
        |e| matches!(e, DataError::TooLarge { .. }),
        &[&shown, "4294967295", "limit"],
    );
}

#[test]
fn idx_zero_images_of_65535_by_65535_is_a_typed_error_not_an_abort() {
    // No payload at all, but every image would have 4,294,836,225 pixels: a model sized by it
    // could not be allocated.
    let dir = TempDir::new("idx_wide");
    let img = dir.write("img", &idx(IMAGES_MAGIC, &[0, 65535, 65535], &[]));
    let lab = dir.write("lab", &labels(&[]));
    let shown = img.display().to_string();
    assert_err(
        load_idx_pair(&img, &lab, 10).unwrap_err(),
        |e| {
            matches!(e, DataError::ItemSize { values, limit, .. }
                if *values == 65535 * 65535 && *limit == MAX_ITEM_VALUES)
        },
        &[&shown, "65535", "values per item"],
    );
}

#[test]
fn idx_images_of_zero_pixels_are_a_typed_error() {
    let dir = TempDir::new("idx_zero_px");
    let img = dir.write("img", &idx(IMAGES_MAGIC, &[2, 0, 28], &[]));
    let lab = dir.write("lab", &labels(&[0, 1]));
    assert_err(
        load_idx_pair(&img, &lab, 10).unwrap_err(),
        |e| matches!(e, DataError::ItemSize { values: 0, .. }),
        &[&img.display().to_string()],
    );
}

#[test]
fn idx_zero_images_of_a_sane_size_is_empty() {
    let dir = TempDir::new("idx_no_images");
    let img = dir.write("img", &idx(IMAGES_MAGIC, &[0, 2, 2], &[]));
    let lab = dir.write("lab", &labels(&[]));
    assert_err(
        load_idx_pair(&img, &lab, 10).unwrap_err(),
        |e| matches!(e, DataError::Empty { .. }),
        &[&img.display().to_string(), "at least one image"],
    );
}

#[test]
fn idx_large_but_allowed_claim_with_short_file_is_truncated() {
    // 2^20 labels claimed (under the cap), 3 present: read only what is there.
    let dir = TempDir::new("idx_claim");
    let img = dir.write("img", &images(1));
    let lab = dir.write("lab", &idx(LABELS_MAGIC, &[1 << 20], &[0, 1, 2]));
    let err = load_idx_pair(&img, &lab, 10).unwrap_err();
    let shown = lab.display().to_string();
    assert_err(
        err,
        |e| matches!(e, DataError::Truncated { found: 3, .. }),
        &[&shown, "1048576"],
    );
}

#[test]
fn idx_empty_file_names_the_path() {
    let dir = TempDir::new("idx_empty");
    let img = dir.write("img", &[]);
    let lab = dir.write("lab", &labels(&[0]));
    let err = load_idx_pair(&img, &lab, 10).unwrap_err();
    let shown = img.display().to_string();
    assert_err(
        err,
        |e| matches!(e, DataError::Empty { .. }),
        &[&shown, "empty"],
    );
}

#[test]
fn idx_label_at_n_classes_names_file_and_item() {
    let dir = TempDir::new("idx_label");
    let img = dir.write("img", &images(3));
    let lab = dir.write("lab", &labels(&[0, 9, 10]));
    let err = load_idx_pair(&img, &lab, 10).unwrap_err();
    let shown = lab.display().to_string();
    assert_err(
        err,
        |e| matches!(e, DataError::Label { label: 10, .. }),
        &[&shown, "item 2", "label 10"],
    );
}

#[test]
fn fashion_missing_directory_names_it_and_how_to_get_the_files() {
    let dir = TempDir::new("fashion_gone");
    let gone = dir.0.join("no_such_dir");
    let err = load_fashion_mnist(&gone).unwrap_err();
    let shown = gone.display().to_string();
    assert_err(
        err,
        |e| matches!(e, DataError::Missing { .. }),
        &[
            &shown,
            "apt-get install dataset-fashion-mnist",
            "/usr/share/datasets/fashion-mnist/",
            "train-images-idx3-ubyte.gz",
        ],
    );
}

#[test]
fn fashion_missing_file_names_both_paths_looked_for() {
    let dir = TempDir::new("fashion_nofile");
    let err = load_fashion_mnist(&dir.0).unwrap_err();
    let gz = dir
        .0
        .join("train-images-idx3-ubyte.gz")
        .display()
        .to_string();
    let plain = dir.0.join("train-images-idx3-ubyte").display().to_string();
    assert_err(
        err,
        |e| matches!(e, DataError::Missing { looked_for, .. } if looked_for.len() == 2),
        &[&gz, &plain, "apt-get install dataset-fashion-mnist"],
    );
}

#[test]
fn fashion_loader_accepts_gzipped_and_plain_names() {
    let dir = TempDir::new("fashion_small");
    dir.write("train-images-idx3-ubyte.gz", &gzip(&images(4)));
    dir.write("train-labels-idx1-ubyte.gz", &gzip(&labels(&[9, 0, 0, 3])));
    dir.write("t10k-images-idx3-ubyte", &images(2));
    dir.write("t10k-labels-idx1-ubyte", &labels(&[1, 2]));
    let (train, test) = load_fashion_mnist(&dir.0).unwrap();
    assert_eq!(train.labels, vec![9, 0, 0, 3]);
    assert_eq!(test.labels, vec![1, 2]);
    assert_eq!((train.n_features, test.n_classes), (4, 10));
}

#[test]
fn fashion_mnist_real_files_load_with_known_first_labels() {
    let dir = Path::new(dfdx_grow_data::idx::FASHION_MNIST_DIR);
    if !dir.is_dir() {
        eprintln!(
            "note: skipping: {} is absent (apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    let (train, test) = load_fashion_mnist(dir).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!((train.n_features, train.n_classes), (784, 10));
    assert_eq!(train.labels[..10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
    assert_eq!(train.class_counts(), vec![6000; 10]);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    assert!(train.features.iter().all(|f| (0.0..=1.0).contains(f)));
    assert!(train.features.contains(&1.0));
}
