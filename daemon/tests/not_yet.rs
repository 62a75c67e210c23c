//! Until the daemon exists, `r1d` must say so and fail, never pretend to run.

#[test]
fn r1d_says_it_is_not_built_and_exits_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_r1d"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not implemented yet"));
}
