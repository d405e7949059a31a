//! Transparent gzip: a reader that decompresses when the data start with the gzip magic.

use std::io::{self, Read};

use flate2::read::MultiGzDecoder;

use crate::DataError;

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A byte source that may be gzip-compressed, with the name to use in error messages.
pub(crate) struct Source<'a> {
    reader: Box<dyn Read + 'a>,
    gz: bool,
    origin: String,
}

impl<'a> Source<'a> {
    /// Wraps `inner`, decompressing it if it starts with the gzip magic `1f 8b`.
    pub(crate) fn new<R: Read + 'a>(mut inner: R, origin: String) -> Result<Self, DataError> {
        let mut head = [0u8; 2];
        let mut n = 0;
        while n < head.len() {
            match inner.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(DataError::Io { origin, source }),
            }
        }
        let gz = head[..n] == GZIP_MAGIC;
        let rest = io::Cursor::new(head).take(n as u64).chain(inner);
        let reader: Box<dyn Read + 'a> = if gz {
            Box::new(MultiGzDecoder::new(rest))
        } else {
            Box::new(rest)
        };
        Ok(Self { reader, gz, origin })
    }

    /// The name used in error messages.
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// Turns a read error into [`DataError::Gzip`] for compressed data, [`DataError::Io`]
    /// otherwise.
    pub(crate) fn error(&self, source: io::Error) -> DataError {
        (self.error_mapper())(source)
    }

    /// [`Source::error`] as a closure that does not borrow the source.
    pub(crate) fn error_mapper(&self) -> impl Fn(io::Error) -> DataError {
        let origin = self.origin.clone();
        let gz = self.gz;
        move |source| {
            let origin = origin.clone();
            if gz {
                DataError::Gzip { origin, source }
            } else {
                DataError::Io { origin, source }
            }
        }
    }

    /// Reads up to `limit` bytes (fewer only at the end of the data), growing the buffer only as
    /// real data arrive.
    pub(crate) fn read_up_to(&mut self, limit: u64) -> Result<Vec<u8>, DataError> {
        let mut out = Vec::new();
        match (&mut self.reader).take(limit).read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(e) => Err(self.error(e)),
        }
    }
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn plain_data_pass_through() {
        let mut s = Source::new(&b"hello"[..], "t".into()).unwrap();
        assert_eq!(s.read_up_to(100).unwrap(), b"hello");
    }

    #[test]
    fn one_byte_input_passes_through() {
        let mut s = Source::new(&[0x1fu8][..], "t".into()).unwrap();
        assert_eq!(s.read_up_to(100).unwrap(), [0x1f]);
    }

    #[test]
    fn gzip_is_decompressed() {
        let z = gzip(b"hello world");
        let mut s = Source::new(&z[..], "t".into()).unwrap();
        assert_eq!(s.read_up_to(100).unwrap(), b"hello world");
    }

    #[test]
    fn read_up_to_stops_at_limit() {
        let z = gzip(&[7u8; 1000]);
        let mut s = Source::new(&z[..], "t".into()).unwrap();
        assert_eq!(s.read_up_to(10).unwrap().len(), 10);
    }

    #[test]
    fn truncated_gzip_is_a_gzip_error() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let z = gzip(&data);
        let mut s = Source::new(&z[..z.len() / 2], "t.gz".into()).unwrap();
        let e = s.read_up_to(u64::MAX).unwrap_err();
        assert!(matches!(e, DataError::Gzip { .. }), "{e:?}");
    }
}
