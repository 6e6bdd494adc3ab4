//! The fixed DNS message header (RFC 1035 4.1.1), read without trusting anything after
//! it; the rest of a message is parsed by hickory-proto in `dns/`.

/// Bytes in the fixed DNS header.
pub const HEADER_LEN: usize = 12;

const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
/// Smallest question: root name (1) + type (2) + class (2).
const MIN_QUESTION: usize = 5;
/// Smallest resource record: root name (1) + type, class, ttl, rdlength (10).
const MIN_RECORD: usize = 11;

/// The fixed header, read without trusting anything after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl RawHeader {
    /// The header of `msg`, or `None` if it is shorter than 12 bytes.
    pub fn parse(msg: &[u8]) -> Option<Self> {
        let b: &[u8; HEADER_LEN] = msg.get(..HEADER_LEN)?.try_into().ok()?;
        let [i0, i1, f0, f1, q0, q1, a0, a1, n0, n1, r0, r1] = *b;
        Some(Self {
            id: u16::from_be_bytes([i0, i1]),
            flags: u16::from_be_bytes([f0, f1]),
            qdcount: u16::from_be_bytes([q0, q1]),
            ancount: u16::from_be_bytes([a0, a1]),
            nscount: u16::from_be_bytes([n0, n1]),
            arcount: u16::from_be_bytes([r0, r1]),
        })
    }

    pub fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }

    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0x0f) as u8
    }

    pub fn truncated(&self) -> bool {
        self.flags & FLAG_TC != 0
    }

    /// The response code (the low four bits; an EDNS extension is not read).
    pub fn rcode(&self) -> u8 {
        (self.flags & 0x000f) as u8
    }

    /// Whether `len` bytes can hold the sections the counts announce. Checked before a
    /// full parse so that a short message cannot make the parser reserve memory for
    /// thousands of records.
    pub fn counts_fit(&self, len: usize) -> bool {
        let records =
            usize::from(self.ancount) + usize::from(self.nscount) + usize::from(self.arcount);
        HEADER_LEN + usize::from(self.qdcount) * MIN_QUESTION + records * MIN_RECORD <= len
    }
}

/// Replaces the id (the first two bytes) of a message in place.
pub fn set_id(msg: &mut [u8], id: u16) {
    if let Some(b) = msg.get_mut(..2) {
        b.copy_from_slice(&id.to_be_bytes());
    }
}

/// A bare 12-byte error reply to a query whose header is all that could be read:
/// same id and opcode, RD copied, RA set, no sections.
pub fn header_only_error(query: &RawHeader, rcode: u8) -> Vec<u8> {
    let opcode = query.flags & 0x7800;
    let flags = FLAG_QR | opcode | (query.flags & FLAG_RD) | FLAG_RA | (u16::from(rcode) & 0x0f);
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out
}
