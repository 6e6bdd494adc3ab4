//! Shared pieces of the fuzz targets: the record format the multi-packet targets read,
//! and the fixed configurations they run against.
//!
//! Multi-packet targets (`pipeline`, `uplink_tcp`, `control` excepted) read their input
//! as records: one tag byte, a little-endian `u16` length, then that many bytes (a
//! shorter tail is taken as it is). The tag's meaning is the target's.

pub mod rigs;

/// Splits `data` into (tag, bytes) records; see the crate docs.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&tag, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
            _ => (rest.len(), &[][..]),
        };
        let (body, tail) = rest.split_at(len.min(rest.len()));
        data = tail;
        Some((tag, body))
    })
}

/// Encodes records in the format [`records`] reads (for seeds and fixtures).
pub fn encode(recs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut v = Vec::new();
    for (tag, body) in recs {
        let len = body.len().min(usize::from(u16::MAX));
        v.push(*tag);
        v.extend_from_slice(&(len as u16).to_le_bytes());
        v.extend_from_slice(body.get(..len).unwrap_or(&[]));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let recs: &[(u8, &[u8])] = &[(1, b"abc"), (7, b""), (2, &[0; 300])];
        let bytes = encode(recs);
        let got: Vec<_> = records(&bytes).collect();
        assert_eq!(got, recs);
        assert_eq!(records(&[5]).collect::<Vec<_>>(), vec![(5, &[][..])]);
        assert_eq!(
            records(&[5, 9, 0, 1]).collect::<Vec<_>>(),
            vec![(5, &[1][..])]
        );
    }
}
