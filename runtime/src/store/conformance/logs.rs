//! The conformance checks of steps and logs while builds run: steps put
//! and replaced in order, logs appended and read at any offset, many logs
//! written in turn.

use std::path::Path;

use super::*;

pub(super) fn steps(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    let b1 = s.start_build(new_build("lin", &[], 1)).unwrap().id;
    let b2 = s.start_build(new_build("lin", &[], 2)).unwrap().id;
    assert!(s.steps(b1).unwrap().is_empty());
    s.put_step(b1, &step(1, "compile")).unwrap();
    s.put_step(b1, &step(0, "checkout")).unwrap();
    s.put_step(b2, &step(0, "other")).unwrap();
    s.put_step(b1, &step(12, "test")).unwrap();
    let got = s.steps(b1).unwrap();
    assert_eq!(ids(&got, |st| st.index as u64), [0, 1, 12], "in step order");
    assert_eq!(got[1], step(1, "compile"));
    let mut done = step(1, "compile");
    done.finished_at = Some(50);
    done.result = Some(BuildResult::Warnings);
    done.warnings = 7;
    done.hidden = true;
    done.state_string = "compile warnings".into();
    s.put_step(b1, &done).unwrap();
    assert_eq!(s.steps(b1).unwrap()[1], done, "replaced");
    assert_eq!(s.steps(b2).unwrap(), [step(0, "other")]);
    assert!(s.steps(99).unwrap().is_empty());
    assert!(s.put_step(99, &step(0, "x")).is_err(), "unknown build");
}

pub(super) fn logs(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    let b = s.start_build(new_build("lin", &[], 1)).unwrap().id;
    s.put_step(b, &step(0, "checkout")).unwrap();
    assert_eq!(s.log_len(b, 0).unwrap(), 0);
    assert!(s.read_log(b, 0, 0, 100).unwrap().is_empty(), "no log yet");
    s.sync_log(b, 0).unwrap();
    assert_eq!(s.append_log(b, 0, b"hello ").unwrap(), 6);
    assert_eq!(s.append_log(b, 0, b"").unwrap(), 6);
    assert_eq!(s.append_log(b, 0, b"world\n").unwrap(), 12);
    assert_eq!(s.append_log(b, 1, b"other step").unwrap(), 10);
    assert_eq!(s.log_len(b, 0).unwrap(), 12);
    assert_eq!(s.read_log(b, 0, 0, 100).unwrap(), b"hello world\n");
    assert_eq!(s.read_log(b, 0, 6, 3).unwrap(), b"wor");
    assert_eq!(s.read_log(b, 0, 11, 100).unwrap(), b"\n");
    assert!(s.read_log(b, 0, 12, 100).unwrap().is_empty(), "at the end");
    assert!(
        s.read_log(b, 0, 1000, 100).unwrap().is_empty(),
        "past the end"
    );
    assert!(s.read_log(b, 0, 0, 0).unwrap().is_empty());
    assert_eq!(s.read_log(b, 0, 0, usize::MAX).unwrap(), b"hello world\n");
    assert_eq!(s.read_log(b, 1, 0, 100).unwrap(), b"other step");
    assert_eq!(s.log_len(b + 1, 0).unwrap(), 0, "another build's log");
    s.sync_log(b, 0).unwrap();
    assert_eq!(
        s.steps(b).unwrap()[0].log_len,
        12,
        "steps report the log length"
    );
    let bin: Vec<u8> = (0..=255u8).collect();
    assert_eq!(s.append_log(b, 0, &bin).unwrap(), 12 + 256);
    assert_eq!(s.read_log(b, 0, 12, 1000).unwrap(), bin, "binary data");
    assert_eq!(
        s.sync_log_len(b, 0).unwrap(),
        12 + 256,
        "synced, its length"
    );
    assert_eq!(s.sync_log_len(b, 1).unwrap(), 10);
    assert_eq!(s.sync_log_len(b, 7).unwrap(), 0, "a step without log");
    drop(s);
    let s = open(dir);
    assert_eq!(s.log_len(b, 0).unwrap(), 12 + 256);
    assert_eq!(s.read_log(b, 0, 6, 6).unwrap(), b"world\n");
    assert_eq!(
        s.append_log(b, 0, b"more").unwrap(),
        12 + 256 + 4,
        "appends go on at the end"
    );
    assert_eq!(s.read_log(b, 0, 12 + 256, 10).unwrap(), b"more");
    assert_eq!(s.read_log(b, 1, 0, 100).unwrap(), b"other step");
}

pub(super) fn many_logs(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    // More logs written in turn than any backend keeps open at once.
    let line = |build: u64, step: u32, i: u32| format!("build {build} step {step} line {i}\n");
    for i in 0..4u32 {
        for build in 1..=20u64 {
            for step in 0..5u32 {
                s.append_log(build, step, line(build, step, i).as_bytes())
                    .unwrap();
            }
        }
    }
    for build in 1..=20u64 {
        for step in 0..5u32 {
            let want: String = (0..4).map(|i| line(build, step, i)).collect();
            assert_eq!(s.log_len(build, step).unwrap(), want.len() as u64);
            assert_eq!(s.read_log(build, step, 0, 10_000).unwrap(), want.as_bytes());
            s.sync_log(build, step).unwrap();
        }
    }
    // A 3 MB log in 64 KiB chunks, read back in pieces of another size.
    let chunk: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    for n in 1..=48u64 {
        assert_eq!(s.append_log(100, 0, &chunk).unwrap(), n * 65_536);
    }
    s.sync_log(100, 0).unwrap();
    let mut offset = 0u64;
    while offset < 48 * 65_536 {
        let got = s.read_log(100, 0, offset, 100_000).unwrap();
        assert!(!got.is_empty());
        for (i, byte) in got.iter().enumerate() {
            assert_eq!(*byte, ((offset + i as u64) % 65_536 % 251) as u8);
        }
        offset += got.len() as u64;
    }
    assert_eq!(offset, 48 * 65_536);
}
