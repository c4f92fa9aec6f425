//! Scripted server responses fed to the walker: it must end each response exactly at its last
//! packet.

use super::basic::{encode_eof, put_lenenc_int, OkPacket};
use super::constants::status;
use super::walker::{Expect, Need, Step, Walker};
use bytes::BytesMut;

fn ok(st: u16) -> Vec<u8> {
    let mut b = BytesMut::new();
    OkPacket {
        status: st,
        ..Default::default()
    }
    .encode(&mut b);
    b.to_vec()
}

fn ok_terminator(st: u16) -> Vec<u8> {
    let mut v = ok(st);
    v[0] = 0xfe;
    v
}

fn eof(st: u16) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode_eof(&mut b, 0, st);
    b.to_vec()
}

fn count(n: u64) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_lenenc_int(&mut b, n);
    b.to_vec()
}

fn coldef() -> Vec<u8> {
    b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00".to_vec()
}

/// Feed packets; return the index of the packet that completed the response.
fn walk(expect: Expect, deprecate_eof: bool, binary: bool, packets: &[Vec<u8>]) -> Option<usize> {
    let mut w = Walker::new(expect, deprecate_eof, binary);
    for (i, p) in packets.iter().enumerate() {
        let need = w.need(p.len(), p.first().copied());
        let seen = match need {
            Need::Whole => &p[..],
            Need::Skim => &p[..p.len().min(1)],
        };
        match w.packet(p.len(), seen).expect("valid response") {
            Step::Done => return Some(i),
            Step::More | Step::LocalInfile => {}
        }
    }
    None
}

#[test]
fn ok_and_err_end_at_once() {
    assert_eq!(walk(Expect::Results, false, false, &[ok(2)]), Some(0));
    assert_eq!(
        walk(
            Expect::Results,
            false,
            false,
            &[b"\xff\x10\x04#42000oops".to_vec()]
        ),
        Some(0)
    );
    assert_eq!(
        walk(Expect::OnePacket, false, false, &[b"Uptime: 5".to_vec()]),
        Some(0)
    );
}

#[test]
fn text_result_with_and_without_eof() {
    let classic = [
        count(2),
        coldef(),
        coldef(),
        eof(2),
        b"\x011\x012".to_vec(),
        b"\xfb\x013".to_vec(),
        eof(2),
    ];
    assert_eq!(walk(Expect::Results, false, false, &classic), Some(6));
    let modern = [count(1), coldef(), b"\x011".to_vec(), ok_terminator(2)];
    assert_eq!(walk(Expect::Results, true, false, &modern), Some(3));
}

#[test]
fn multi_results_continue_until_the_last() {
    let more = status::MORE_RESULTS_EXISTS | 2;
    let packets = [
        count(1),
        coldef(),
        eof(2),
        b"\x011".to_vec(),
        eof(more),
        ok(more),
        b"\xff\x01\x00x".to_vec(),
    ];
    assert_eq!(walk(Expect::Results, false, false, &packets), Some(6));
    let packets = [ok(more), ok(more), ok(2)];
    assert_eq!(walk(Expect::Results, false, false, &packets), Some(2));
}

#[test]
fn error_in_the_middle_of_rows_ends_the_response() {
    let packets = [
        count(1),
        coldef(),
        eof(2),
        b"\x011".to_vec(),
        b"\xff\x01\x00x".to_vec(),
    ];
    assert_eq!(walk(Expect::Results, false, false, &packets), Some(4));
}

#[test]
fn local_infile_then_ok() {
    let mut w = Walker::new(Expect::Results, false, false);
    assert_eq!(w.packet(5, b"\xfbfile").unwrap(), Step::LocalInfile);
    let o = ok(2);
    assert_eq!(w.packet(o.len(), &o).unwrap(), Step::Done);
}

#[test]
fn prepare_ok_with_params_and_columns() {
    let prep = b"\x00\x01\x00\x00\x00\x02\x00\x03\x00\x00\x00\x00".to_vec(); // 2 columns, 3 params
    let classic = [
        prep.clone(),
        coldef(),
        coldef(),
        coldef(),
        eof(2),
        coldef(),
        coldef(),
        eof(2),
    ];
    assert_eq!(walk(Expect::Prepare, false, false, &classic), Some(7));
    let modern = [prep, coldef(), coldef(), coldef(), coldef(), coldef()];
    assert_eq!(walk(Expect::Prepare, true, false, &modern), Some(5));
    let none = [b"\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec()];
    assert_eq!(walk(Expect::Prepare, false, false, &none), Some(0));
}

#[test]
fn cursor_ends_after_the_column_definitions() {
    let cursor = status::CURSOR_EXISTS | 2;
    assert_eq!(
        walk(
            Expect::Results,
            false,
            true,
            &[count(1), coldef(), eof(cursor)]
        ),
        Some(2)
    );
    assert_eq!(
        walk(
            Expect::Results,
            true,
            true,
            &[count(1), coldef(), ok_terminator(cursor)]
        ),
        Some(2)
    );
    // Without a cursor, binary rows follow.
    let rows = [count(1), coldef(), eof(2), b"\x00\x00\x01".to_vec(), eof(2)];
    assert_eq!(walk(Expect::Results, false, true, &rows), Some(4));
}

#[test]
fn rows_of_16_mib_and_more_are_not_terminators() {
    let mut w = Walker::new(Expect::Fetch, true, true);
    // A full-size chunk starting with 0xFE is a row, and its continuation is not inspected.
    assert_eq!(w.need(super::constants::MAX_CHUNK, Some(0xfe)), Need::Skim);
    assert_eq!(
        w.packet(super::constants::MAX_CHUNK, &[0xfe]).unwrap(),
        Step::More
    );
    assert_eq!(w.need(3, Some(0xfe)), Need::Skim);
    assert_eq!(w.packet(3, &[0xfe]).unwrap(), Step::More);
    let t = ok_terminator(2);
    assert_eq!(w.packet(t.len(), &t).unwrap(), Step::Done);
}

#[test]
fn nothing_expected_is_done_at_once() {
    assert!(Walker::new(Expect::Nothing, false, false).is_done());
}
