//! DNS message helpers: the raw header, sanity checks before a full parse, and
//! encoding replies within a size limit.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::Record;

pub use crate::wire::dns::{RawHeader, header_only_error, set_id};
/// The UDP reply limit without EDNS (RFC 1035).
pub const CLASSIC_UDP_LIMIT: usize = 512;
/// The largest DNS message (TCP's two-byte length prefix).
pub const MAX_MESSAGE: usize = u16::MAX as usize;

/// A response to a parsed `query`: same id, opcode, question, RD and CD; RA set; an
/// OPT record (advertising `udp_payload`) when the query had one.
pub fn response_to(query: &Message, rcode: ResponseCode, udp_payload: u16) -> Message {
    let mut resp = Message::new(query.id, MessageType::Response, OpCode::Query);
    resp.metadata.recursion_desired = query.recursion_desired;
    resp.metadata.checking_disabled = query.checking_disabled;
    resp.metadata.recursion_available = true;
    resp.metadata.response_code = rcode;
    resp.add_queries(query.queries.iter().cloned());
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(udp_payload.max(CLASSIC_UDP_LIMIT as u16));
        edns.set_version(0);
        resp.set_edns(edns);
    }
    resp
}

/// Encodes `msg` in at most `limit` bytes (at least 512). When the whole message does
/// not fit, as many answers as fit are kept, the authority and additional sections are
/// dropped (the OPT record stays) and TC is set. `None` only if even that does not fit
/// or encoding fails, which a message built by this module never does.
pub fn encode_within(msg: &mut Message, limit: usize) -> Option<Vec<u8>> {
    let limit = limit.clamp(CLASSIC_UDP_LIMIT, MAX_MESSAGE);
    let full = msg.to_vec().ok()?;
    if full.len() <= limit {
        return Some(full);
    }
    msg.metadata.truncation = true;
    msg.authorities.clear();
    msg.additionals.clear();
    let answers: Vec<Record> = std::mem::take(&mut msg.answers);
    // Binary search for the most answers that fit: `lo` always fits (0 answers: the
    // header, one question of at most 259 bytes and an OPT record, under 512).
    let (mut lo, mut hi) = (0usize, answers.len());
    let mut best: Option<Vec<u8>> = None;
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        msg.answers = answers.get(..mid)?.to_vec();
        let bytes = msg.to_vec().ok()?;
        if bytes.len() <= limit {
            lo = mid;
            best = Some(bytes);
        } else {
            hi = mid - 1;
        }
    }
    msg.answers = answers.get(..lo)?.to_vec();
    match best {
        Some(b) => Some(b),
        None => {
            let bytes = msg.to_vec().ok()?;
            (bytes.len() <= limit).then_some(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, RecordType};

    use super::*;

    #[test]
    fn raw_header_fields() {
        // id 0x50d6, RD+AD, one question, one additional (dig's default query).
        let h = RawHeader::parse(&[0x50, 0xd6, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1]).unwrap();
        assert_eq!(h.id, 0x50d6);
        assert!(!h.is_response());
        assert_eq!(h.opcode(), 0);
        assert_eq!((h.qdcount, h.ancount, h.nscount, h.arcount), (1, 0, 0, 1));
        assert!(RawHeader::parse(&[0; 11]).is_none());
        let r = RawHeader::parse(&[0, 0, 0xaa, 0x03, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert!(r.is_response() && r.truncated());
        assert_eq!(r.opcode(), 5);
    }

    #[test]
    fn counts_must_fit_the_length() {
        let h = RawHeader {
            id: 0,
            flags: 0,
            qdcount: 1,
            ancount: 0,
            nscount: 0,
            arcount: 1,
        };
        assert!(h.counts_fit(12 + 5 + 11));
        assert!(!h.counts_fit(12 + 5 + 10));
        let bomb = RawHeader {
            ancount: u16::MAX,
            ..h
        };
        assert!(!bomb.counts_fit(512));
    }

    #[test]
    fn header_only_error_bytes() {
        let q = RawHeader::parse(&[0x12, 0x34, 0x29, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
        // opcode 5 (UPDATE), RD set -> QR, opcode 5, RD, RA, NOTIMP.
        let e = header_only_error(&q, ResponseCode::NotImp.low());
        assert_eq!(e, [0x12, 0x34, 0xa9, 0x84, 0, 0, 0, 0, 0, 0, 0, 0]);
        let m = Message::from_vec(&e).unwrap();
        assert_eq!(m.response_code, ResponseCode::NotImp);
        assert_eq!(m.op_code, OpCode::Update);
    }

    #[test]
    fn set_id_in_place() {
        let mut b = [0u8, 0, 1, 2];
        set_id(&mut b, 0xbeef);
        assert_eq!(b, [0xbe, 0xef, 1, 2]);
        let mut short = [7u8];
        set_id(&mut short, 1);
        assert_eq!(short, [7]);
    }

    fn many_answers(n: u8, edns: bool) -> Message {
        let mut q = Message::new(7, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(
            Name::from_ascii("svc.").unwrap(),
            RecordType::A,
        ));
        if edns {
            q.set_edns(Edns::new());
        }
        let mut r = response_to(&q, ResponseCode::NoError, 1232);
        for i in 0..n {
            r.add_answer(Record::from_rdata(
                Name::from_ascii("svc.").unwrap(),
                10,
                RData::A(A(Ipv4Addr::new(10, 0, 0, i))),
            ));
        }
        r
    }

    #[test]
    fn encode_within_cuts_answers_and_sets_tc() {
        // 12 + 9 (question) + 16 per compressed A record: 30 fit in 512, 31 do not.
        let mut m = many_answers(40, false);
        let b = encode_within(&mut m, 512).unwrap();
        assert!(b.len() <= 512);
        let p = Message::from_vec(&b).unwrap();
        assert!(p.truncation);
        assert_eq!(p.answers.len(), 30);
        assert_eq!(b.len(), 12 + 9 + 30 * 16);

        let mut small = many_answers(3, false);
        let b = encode_within(&mut small, 512).unwrap();
        let p = Message::from_vec(&b).unwrap();
        assert!(!p.truncation);
        assert_eq!(p.answers.len(), 3);
    }

    #[test]
    fn encode_within_keeps_opt() {
        let mut m = many_answers(200, true);
        let b = encode_within(&mut m, 1000).unwrap();
        assert!(b.len() <= 1000);
        let p = Message::from_vec(&b).unwrap();
        assert!(p.truncation);
        assert!(p.edns.is_some());
        assert_eq!(p.answers.len(), (1000 - 12 - 9 - 11) / 16);
        // A limit below 512 means 512.
        let b = encode_within(&mut many_answers(200, true), 100).unwrap();
        assert!(b.len() <= 512 && b.len() > 400);
    }
}
