//! The code sandbox against hostile candidates: every attack must score 0, and the same judge must
//! then still pass a correct program.
//!
//! Each attack is written so that it *would* pass if it worked (it prints the expected output, or
//! skips the failing tests), so a 0 proves the defence, not a typo. These tests need bubblewrap;
//! CI installs it with scripts/install-deps.sh. They skip, saying so, only where bubblewrap is not
//! installed and `CI` is not set.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use r1_judge::sandbox::{
    CodeJob, CodeJudge, CodeOutcome, CodeVerdict, SandboxConfig, SandboxError, TestCase,
};

/// One judge shared by every test, as the daemon shares one: attacks must not poison it.
fn judge() -> Option<&'static CodeJudge> {
    static JUDGE: OnceLock<Option<CodeJudge>> = OnceLock::new();
    JUDGE
        .get_or_init(|| match CodeJudge::new(SandboxConfig::for_tests()) {
            Ok(judge) => Some(judge),
            Err(SandboxError::BwrapNotFound { searched }) if std::env::var_os("CI").is_none() => {
                eprintln!(
                    "SKIPPED: bubblewrap is not installed ({searched}); run scripts/install-deps.sh"
                );
                None
            }
            Err(error) => panic!("the code judge did not start: {error}"),
        })
        .as_ref()
}

fn stdin_job(source: &str, input: &str, expected: &str) -> CodeJob {
    CodeJob {
        source: source.into(),
        cases: vec![TestCase {
            input: input.into(),
            expected_output: expected.into(),
        }],
        tests: String::new(),
    }
}

fn assert_job(source: &str, tests: &str) -> CodeJob {
    CodeJob {
        source: source.into(),
        cases: Vec::new(),
        tests: tests.into(),
    }
}

const ADD: &str = "a, b = map(int, input().split())\nprint(a + b)\n";
const ADD_FN: &str = "def add(a, b):\n    return a + b\n";
const ADD_TESTS: &str = "assert add(1, 2) == 3\nassert add(-5, 5) == 0\n";

/// A correct job of each kind, run after every attack.
fn assert_still_serving(judge: &CodeJudge, after: &str) {
    let verdict = judge.run(stdin_job(ADD, "2 3\n", "5"));
    assert_eq!(
        verdict.outcome,
        CodeOutcome::Passed,
        "after {after}: {verdict:?}"
    );
    let verdict = judge.run(assert_job(ADD_FN, ADD_TESTS));
    assert_eq!(
        verdict.outcome,
        CodeOutcome::Passed,
        "after {after}: {verdict:?}"
    );
}

/// Runs an attack, checks it scored 0 (and, when given, why), then checks the judge still works.
fn attack(name: &str, job: CodeJob, expected: Option<CodeOutcome>) -> Option<CodeVerdict> {
    let judge = judge()?;
    let verdict = judge.run(job);
    assert_eq!(verdict.reward, 0.0, "attack {name} scored: {verdict:?}");
    assert_ne!(
        verdict.outcome,
        CodeOutcome::Passed,
        "attack {name}: {verdict:?}"
    );
    if let Some(outcome) = expected {
        assert_eq!(verdict.outcome, outcome, "attack {name}: {verdict:?}");
    }
    assert_still_serving(judge, name);
    Some(verdict)
}

#[test]
fn correct_solutions_pass() {
    let Some(judge) = judge() else { return };
    let both = CodeJob {
        source: "import sys\ndef add(a, b):\n    return a + b\nif __name__ == '__main__':\n    \
                 data = sys.stdin.read().split()\n    if data:\n        print(add(int(data[0]), int(data[1])))\n"
            .into(),
        cases: vec![
            TestCase {
                input: "1 2\n".into(),
                expected_output: "3\n".into(),
            },
            TestCase {
                input: "10 -4".into(),
                expected_output: "6   \n\n".into(),
            },
        ],
        tests: ADD_TESTS.into(),
    };
    let verdict = judge.run(both);
    assert_eq!(verdict.outcome, CodeOutcome::Passed, "{verdict:?}");
    assert_eq!(verdict.reward, 1.0);
    assert_eq!((verdict.checks_passed, verdict.checks_total), (3, 3));
    // A program that prints the right answer and then exits with status 0 is simply correct.
    let verdict = judge.run(stdin_job(
        "import sys\nprint(sum(map(int, input().split())))\nsys.exit(0)\n",
        "4 4\n",
        "8",
    ));
    assert_eq!(verdict.outcome, CodeOutcome::Passed, "{verdict:?}");
    // Scratch files in the private /tmp, a few threads and a subprocess are all allowed.
    let verdict = judge.run(stdin_job(
        "import subprocess, threading\nopen('/tmp/scratch', 'w').write(input())\n\
         t = threading.Thread(target=lambda: None)\nt.start()\nt.join()\n\
         out = subprocess.run(['/usr/bin/python3', '-c', 'print(6 * 7)'], capture_output=True, text=True)\n\
         print(open('/tmp/scratch').read().strip(), out.stdout.strip())\n",
        "hello\n",
        "hello 42",
    ));
    assert_eq!(verdict.outcome, CodeOutcome::Passed, "{verdict:?}");
}

#[test]
fn wrong_solutions_fail() {
    let Some(judge) = judge() else { return };
    let verdict = judge.run(stdin_job("print(42)\n", "2 3\n", "5"));
    assert_eq!(verdict.outcome, CodeOutcome::WrongAnswer, "{verdict:?}");
    let verdict = judge.run(assert_job("def add(a, b):\n    return a - b\n", ADD_TESTS));
    assert_eq!(verdict.outcome, CodeOutcome::RuntimeError, "{verdict:?}");
    let verdict = judge.run(stdin_job("def broken(:\n", "", ""));
    assert_eq!(verdict.outcome, CodeOutcome::RuntimeError, "{verdict:?}");
    let verdict = judge.run(CodeJob {
        source: ADD.into(),
        ..CodeJob::default()
    });
    assert_eq!(verdict.outcome, CodeOutcome::Rejected, "{verdict:?}");
    assert_still_serving(judge, "wrong solutions");
}

#[test]
fn many_jobs_run_concurrently_in_order() {
    let Some(judge) = judge() else { return };
    let jobs: Vec<CodeJob> = (0..6)
        .map(|i| {
            stdin_job(
                ADD,
                &format!("{i} {i}\n"),
                &format!("{}", if i % 2 == 0 { 2 * i } else { 0 }),
            )
        })
        .collect();
    let verdicts = judge.run_many(jobs);
    for (i, verdict) in verdicts.iter().enumerate() {
        let expected = if i % 2 == 0 {
            CodeOutcome::Passed
        } else {
            CodeOutcome::WrongAnswer
        };
        assert_eq!(verdict.outcome, expected, "job {i}: {verdict:?}");
    }
    let receiver = judge.submit(assert_job(ADD_FN, ADD_TESTS));
    let verdict = receiver.recv().expect("a verdict for every submitted job");
    assert_eq!(verdict.outcome, CodeOutcome::Passed, "{verdict:?}");
}

#[test]
fn fork_bomb_is_bounded() {
    let source =
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n";
    let started = Instant::now();
    attack(
        "fork bomb",
        stdin_job(source, "", ""),
        Some(CodeOutcome::TimedOut),
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the fork bomb was not stopped in time"
    );
    // While a bomb runs, the other worker still serves: the limit is per sandbox, not per uid.
    if let Some(judge) = judge() {
        let verdicts = judge.run_many(vec![
            stdin_job(source, "", ""),
            stdin_job(ADD, "20 22\n", "42"),
            assert_job(ADD_FN, ADD_TESTS),
        ]);
        assert_eq!(
            verdicts[0].outcome,
            CodeOutcome::TimedOut,
            "{:?}",
            verdicts[0]
        );
        for verdict in &verdicts[1..] {
            assert_eq!(
                verdict.outcome,
                CodeOutcome::Passed,
                "beside a fork bomb: {verdict:?}"
            );
        }
    }
    // The bomb hit its process limit instead of the machine's: a fork inside fails fast.
    attack(
        "fork until refused",
        stdin_job(
            "import os, time\nn = 0\ntry:\n    while n < 10000:\n        if os.fork() == 0:\n            time.sleep(5)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint('unbounded' if n >= 10000 else 'bounded')\n",
            "",
            "unbounded",
        ),
        Some(CodeOutcome::WrongAnswer),
    );
}

#[test]
fn infinite_loop_times_out() {
    attack(
        "busy loop",
        stdin_job("while True:\n    pass\n", "", ""),
        Some(CodeOutcome::TimedOut),
    );
    attack(
        "sleep",
        stdin_job("import time\ntime.sleep(60)\nprint(5)\n", "", "5"),
        Some(CodeOutcome::TimedOut),
    );
    attack(
        "loop in tests",
        assert_job(ADD_FN, "while True:\n    pass\n"),
        Some(CodeOutcome::TimedOut),
    );
}

#[test]
fn memory_hog_is_refused() {
    attack(
        "one huge allocation",
        stdin_job(
            "x = bytearray(8 * 1024 ** 3)\nprint('allocated')\n",
            "",
            "allocated",
        ),
        Some(CodeOutcome::RuntimeError),
    );
    attack(
        "growing list",
        stdin_job("a = []\nwhile True:\n    a.append(' ' * 10 ** 6)\n", "", ""),
        Some(CodeOutcome::RuntimeError),
    );
}

#[test]
fn network_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a local listener for the test");
    let port = listener.local_addr().expect("the listener's port").port();
    let connect = |host: &str, port: u16| {
        format!(
            "import socket\ntry:\n    socket.create_connection(('{host}', {port}), timeout=1)\n    print('connected')\nexcept OSError:\n    print('refused')\n"
        )
    };
    attack(
        "connect to host loopback",
        stdin_job(&connect("127.0.0.1", port), "", "connected"),
        Some(CodeOutcome::WrongAnswer),
    );
    attack(
        "connect to external ip",
        stdin_job(&connect("1.1.1.1", 53), "", "connected"),
        Some(CodeOutcome::WrongAnswer),
    );
    attack(
        "connect to external dns name",
        stdin_job(&connect("example.com", 80), "", "connected"),
        Some(CodeOutcome::WrongAnswer),
    );
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    assert!(
        listener.accept().is_err(),
        "a sandboxed program reached the host's loopback"
    );
}

#[test]
fn writes_outside_tmp_fail_and_tmp_is_private() {
    let host_dir = tempfile::tempdir().expect("a host temp dir");
    let marker = format!("r1-sandbox-marker-{}", std::process::id());
    let source = format!(
        "import os\nwritten = []\nfor path in ['/usr/r1-pwned', '/etc/r1-pwned', '/r1-pwned', '/dev/r1-pwned', '/proc/r1-pwned', {host:?}]:\n    try:\n        with open(path, 'w') as f:\n            f.write('pwned')\n        written.append(path)\n    except OSError:\n        pass\nopen('/tmp/{marker}', 'w').write('private')\nprint('wrote' if written else 'refused')\n",
        host = host_dir.path().join("pwned").display().to_string()
    );
    attack(
        "write outside tmp",
        stdin_job(&source, "", "wrote"),
        Some(CodeOutcome::WrongAnswer),
    );
    assert!(!host_dir.path().join("pwned").exists());
    assert!(
        !std::path::Path::new("/tmp").join(&marker).exists(),
        "the sandbox's /tmp is the host's"
    );
    attack(
        "file over the size limit",
        stdin_job(
            "open('/tmp/big', 'wb').write(b'x' * (4 << 20))\nprint('written')\n",
            "",
            "written",
        ),
        None,
    );
}

#[test]
fn host_secrets_are_invisible() {
    let dirs = [
        tempfile::tempdir().expect("a temp dir under /tmp"),
        tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("a temp dir in the crate"),
    ];
    for dir in &dirs {
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, "s3cr3t-token").expect("the secret file");
        let source = format!(
            "try:\n    print(open({:?}).read())\nexcept OSError as e:\n    print('hidden', e)\n",
            secret.display().to_string()
        );
        attack(
            "read a host secret",
            stdin_job(&source, "", "s3cr3t-token"),
            Some(CodeOutcome::WrongAnswer),
        );
    }
    let environment = "import os\nprint(os.environ.get('R1_TEST_SECRET', 'absent'))\n";
    std::env::set_var("R1_TEST_SECRET", "leaked");
    attack(
        "read the judge's environment",
        stdin_job(environment, "", "leaked"),
        Some(CodeOutcome::WrongAnswer),
    );
    attack(
        "list host home directories",
        stdin_job("import os\nprint(sorted(os.listdir('/')))\nprint(os.path.exists('/root') or os.path.exists('/home'))\n", "", "True"),
        Some(CodeOutcome::WrongAnswer),
    );
}

#[test]
fn output_flood_is_cut() {
    attack(
        "stdout flood",
        stdin_job("while True:\n    print('x' * 1000)\n", "", ""),
        Some(CodeOutcome::OutputOverflow),
    );
    attack(
        "stderr flood",
        stdin_job(
            "import sys\nwhile True:\n    sys.stderr.write('x' * 1000)\n",
            "",
            "",
        ),
        Some(CodeOutcome::OutputOverflow),
    );
    attack(
        "flood from tests",
        assert_job(ADD_FN, "print('y' * (10 ** 7))\n"),
        Some(CodeOutcome::OutputOverflow),
    );
}

#[test]
fn early_exit_does_not_score() {
    let failing_tests = "assert add(1, 2) == 4, 'the tests must fail'\n";
    for exit in [
        "exit(0)",
        "import sys\nsys.exit(0)",
        "import os\nos._exit(0)",
        "raise SystemExit(0)",
        "quit()",
    ] {
        let source = format!("{ADD_FN}{exit}\n");
        attack(
            exit,
            assert_job(&source, failing_tests),
            Some(CodeOutcome::Unproven),
        );
        attack(
            exit,
            stdin_job(&format!("{exit}\n"), "2 3\n", "5"),
            Some(CodeOutcome::WrongAnswer),
        );
    }
    attack(
        "exit from atexit",
        assert_job(
            &format!("import atexit, os\natexit.register(lambda: os._exit(0))\n{ADD_FN}"),
            failing_tests,
        ),
        None,
    );
}

#[test]
fn fake_pass_lines_do_not_score() {
    let failing_tests = "assert add(1, 2) == 4\n";
    let forgeries = [
        "print('PASS')\nimport os\nos._exit(0)",
        "print('R1 PASS all tests passed')\nprint('0' * 32)\nimport os\nos._exit(0)",
        "import sys\nsys.stdout.write('\\n' + 'f' * 32 + '\\n')\nsys.stdout.flush()\nimport os\nos._exit(0)",
        // Try to read the nonce the runner was given.
        "import os, sys\nprint(os.read(0, 4096).decode() or 'stdin empty')\nprint(os.listdir('/'), os.path.exists('/proc/1/mem'))\nos._exit(0)",
    ];
    for forgery in forgeries {
        let source = format!("{ADD_FN}{forgery}\n");
        attack(
            forgery,
            assert_job(&source, failing_tests),
            Some(CodeOutcome::Unproven),
        );
    }
    let tamperings = [
        // Make the runner's exec of the tests a no-op.
        "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None",
        // Replace the assertion machinery the tests use.
        "import builtins\nclass Nope(Exception): pass\nbuiltins.AssertionError = Nope",
        // Skip the failing lines of the tests with a trace function.
        "import sys\ndef skip(frame, event, arg):\n    if frame.f_code.co_filename == 'tests.py' and event == 'line':\n        frame.f_lineno = frame.f_lineno + 1\n    return skip\nsys.settrace(skip)",
    ];
    for tampering in tamperings {
        let source = format!("{ADD_FN}{tampering}\n");
        let verdict = attack(tampering, assert_job(&source, failing_tests), None);
        assert!(
            verdict.is_none_or(|v| v.outcome == CodeOutcome::RuntimeError),
            "{tampering}"
        );
    }
}

#[test]
fn killing_the_parent_does_not_score() {
    let failing_tests = "assert add(1, 2) == 4\n";
    for kill in [
        "import os\nos.kill(os.getppid(), 9)",
        "import os\nos.kill(1, 9)",
        "import os, signal\nos.kill(-1, signal.SIGKILL)",
        "import os\nos.killpg(0, 9)",
    ] {
        let source = format!("{ADD_FN}{kill}\n");
        attack(kill, assert_job(&source, failing_tests), None);
        attack(
            kill,
            stdin_job(&format!("{kill}\nprint(5)\n"), "", "4"),
            None,
        );
    }
}

#[test]
fn closing_or_redirecting_fds_does_not_score() {
    let failing_tests = "assert add(1, 2) == 4\n";
    for fds in [
        "import os\nos.close(1)",
        "import os\nos.close(1)\nos.close(2)",
        "import os\nos.dup2(2, 1)",
        "import os, sys\nr, w = os.pipe()\nos.dup2(w, 1)\nsys.stdout = open(2, 'w')",
        "import os\nfor fd in range(3, 64):\n    try:\n        os.close(fd)\n    except OSError:\n        pass",
    ] {
        let source = format!("{ADD_FN}{fds}\n");
        attack(fds, assert_job(&source, failing_tests), None);
    }
    // The solution's own stdout carries nothing the verdict needs: the proof is written by the
    // tests' process, so a correct solution that closes its stdout is still correct.
    if let Some(judge) = judge() {
        let verdict = judge.run(assert_job(
            &format!("{ADD_FN}import os\nos.close(1)\nos.close(2)\n"),
            ADD_TESTS,
        ));
        assert_eq!(verdict.outcome, CodeOutcome::Passed, "{verdict:?}");
    }
}

#[test]
fn counters_track_outcomes() {
    let config = SandboxConfig {
        workers: 1,
        ..SandboxConfig::for_tests()
    };
    let judge = match CodeJudge::new(config) {
        Ok(judge) => judge,
        Err(SandboxError::BwrapNotFound { .. }) if std::env::var_os("CI").is_none() => return,
        Err(error) => panic!("the code judge did not start: {error}"),
    };
    judge.run(stdin_job(ADD, "1 1\n", "2"));
    judge.run(stdin_job(ADD, "1 1\n", "3"));
    judge.run(stdin_job("while True:\n    print('x' * 1000)\n", "", ""));
    judge.run(assert_job(
        &format!("{ADD_FN}import os\nos._exit(0)\n"),
        "assert False\n",
    ));
    let counts = judge.counts();
    assert_eq!(counts.runs, 4);
    assert_eq!(counts.passes, 1);
    assert_eq!(counts.wrong_answers, 1);
    assert_eq!(counts.output_overflows, 1);
    assert_eq!(counts.unproven, 1);
    assert_eq!(counts.sandbox_errors, 0);
}

#[test]
fn missing_tools_are_clear_errors() {
    let missing_bwrap = SandboxConfig {
        bwrap: "/nonexistent/bwrap".into(),
        ..SandboxConfig::for_tests()
    };
    assert!(matches!(
        CodeJudge::new(missing_bwrap),
        Err(SandboxError::BwrapNotFound { .. })
    ));
    if judge().is_none() {
        return;
    }
    let hidden_python = SandboxConfig {
        python: std::env::current_exe().expect("the test binary's path"),
        ..SandboxConfig::for_tests()
    };
    let error = CodeJudge::new(hidden_python)
        .err()
        .expect("a python outside the sandbox is refused");
    assert!(
        matches!(error, SandboxError::PythonUnusable { .. }),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// Kernel keyrings and dangerous syscalls (issue 14, item 2).

/// `KEY_SPEC_SESSION_KEYRING` (linux/keyctl.h).
const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;

/// A candidate that looks for a `user` key described `description` in every keyring it can
/// name, and also tries `guessed` (a serial it may have learnt or guessed), printing the first
/// payload it can read.
fn key_reader(description: &str, guessed: libc::c_long) -> String {
    format!(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nNR = {nr}\n\
         def keyctl(*args):\n    return libc.syscall(ctypes.c_long(NR), *args)\n\
         serials = [{guessed}]\n\
         for keyring in (-1, -2, -3, -4, -5):\n    \
             found = keyctl(ctypes.c_long(10), ctypes.c_long(keyring), ctypes.c_char_p(b'user'), ctypes.c_char_p(b'{description}'), ctypes.c_long(0))\n    \
             if found > 0:\n        serials.append(found)\n\
         for serial in serials:\n    \
             buffer = ctypes.create_string_buffer(4096)\n    \
             size = keyctl(ctypes.c_long(11), ctypes.c_long(serial), buffer, ctypes.c_long(4096))\n    \
             if size > 0:\n        print(buffer.raw[:size].decode())\n        break\n\
         else:\n    print('denied', ctypes.get_errno())\n",
        nr = libc::SYS_keyctl,
    )
}

/// A candidate that stores `payload` as a `user` key described `description` in its session,
/// user and user-session keyrings, for a later run to find.
fn key_writer(description: &str, payload: &str) -> String {
    format!(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nstored = 0\n\
         for keyring in (-3, -4, -5):\n    \
             serial = libc.syscall(ctypes.c_long({nr}), ctypes.c_char_p(b'user'), ctypes.c_char_p(b'{description}'), ctypes.c_char_p(b'{payload}'), ctypes.c_long({len}), ctypes.c_long(keyring))\n    \
             stored += serial > 0\n\
         print('stored' if stored else 'refused')\n",
        nr = libc::SYS_add_key,
        len = payload.len(),
    )
}

#[test]
fn the_judges_keyring_is_invisible_and_runs_share_no_keys() {
    if judge().is_none() {
        return;
    }
    // On its own thread: a session keyring is per thread until it forks, so the planted key and
    // the judge started here (whose workers inherit this keyring, as a daemon started from a
    // login session would) stay out of every other test.
    std::thread::spawn(|| {
        // SAFETY: KEYCTL_JOIN_SESSION_KEYRING with a valid NUL-terminated name.
        let joined = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                1 as libc::c_long,
                c"r1-test-judge-session".as_ptr(),
            )
        };
        if joined < 0 {
            eprintln!(
                "SKIPPED: this kernel offers no keyrings to plant a key in: {}",
                std::io::Error::last_os_error()
            );
            return;
        }
        let secret = format!("planted-{}", std::process::id());
        // SAFETY: add_key with valid strings and a payload pointer/length of `secret`.
        let planted = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"r1-planted".as_ptr(),
                secret.as_ptr(),
                secret.len(),
                KEY_SPEC_SESSION_KEYRING,
            )
        };
        assert!(
            planted > 0,
            "planting a key: {}",
            std::io::Error::last_os_error()
        );
        let judge = CodeJudge::new(SandboxConfig {
            workers: 1,
            ..SandboxConfig::for_tests()
        })
        .expect("a judge on a thread with a session keyring");
        let verdict = judge.run(stdin_job(&key_reader("r1-planted", planted), "", &secret));
        assert_eq!(verdict.reward, 0.0, "read the judge's key: {verdict:?}");
        assert_eq!(verdict.outcome, CodeOutcome::WrongAnswer, "{verdict:?}");
        // A channel between runs: one stores a key, a later one looks for it.
        let handoff = "from-an-earlier-run";
        judge.run(stdin_job(&key_writer("r1-channel", handoff), "", "stored"));
        let verdict = judge.run(stdin_job(&key_reader("r1-channel", 0), "", handoff));
        assert_eq!(verdict.reward, 0.0, "a key crossed runs: {verdict:?}");
        assert_eq!(verdict.outcome, CodeOutcome::WrongAnswer, "{verdict:?}");
        assert_still_serving(&judge, "keyring attacks");
    })
    .join()
    .expect("the keyring test's thread");
}

/// Syscalls the filter refuses, with arguments that would succeed, or fail differently, without
/// it, and the errno each must get.
fn refused_syscalls() -> Vec<(&'static str, libc::c_long, Vec<libc::c_long>, &'static str)> {
    let fork_flags = libc::SIGCHLD as libc::c_long;
    let mut calls = vec![
        ("keyctl", libc::SYS_keyctl, vec![0, -3, 0], "EPERM"),
        ("add_key", libc::SYS_add_key, vec![0, 0, 0, 0, -3], "EPERM"),
        (
            "request_key",
            libc::SYS_request_key,
            vec![0, 0, 0, 0],
            "EPERM",
        ),
        ("ptrace", libc::SYS_ptrace, vec![0, 0, 0, 0], "EPERM"),
        (
            "process_vm_readv",
            libc::SYS_process_vm_readv,
            vec![1, 0, 0, 0, 0, 0],
            "EPERM",
        ),
        ("bpf", libc::SYS_bpf, vec![0, 0, 0], "EPERM"),
        (
            "perf_event_open",
            libc::SYS_perf_event_open,
            vec![0, 0, -1, -1, 0],
            "EPERM",
        ),
        // UFFD_USER_MODE_ONLY: allowed to unprivileged users since Linux 5.11.
        ("userfaultfd", libc::SYS_userfaultfd, vec![1], "EPERM"),
        (
            "io_uring_setup",
            libc::SYS_io_uring_setup,
            vec![1, 0],
            "EPERM",
        ),
        (
            "unshare-user",
            libc::SYS_unshare,
            vec![libc::CLONE_NEWUSER as libc::c_long],
            "EPERM",
        ),
        (
            "unshare-files",
            libc::SYS_unshare,
            vec![libc::CLONE_FILES as libc::c_long],
            "EPERM",
        ),
        ("setns", libc::SYS_setns, vec![0, 0], "EPERM"),
        ("mount", libc::SYS_mount, vec![0, 0, 0, 0, 0], "EPERM"),
        ("umount2", libc::SYS_umount2, vec![0, 0], "EPERM"),
        ("pivot_root", libc::SYS_pivot_root, vec![0, 0], "EPERM"),
        (
            "clone-newuser",
            libc::SYS_clone,
            vec![fork_flags | libc::CLONE_NEWUSER as libc::c_long, 0, 0, 0, 0],
            "EPERM",
        ),
        (
            "clone-newnet",
            libc::SYS_clone,
            vec![fork_flags | libc::CLONE_NEWNET as libc::c_long, 0, 0, 0, 0],
            "EPERM",
        ),
        ("clone3", libc::SYS_clone3, vec![0, 0], "ENOSYS"),
        (
            "personality-linux32",
            libc::SYS_personality,
            vec![8],
            "EPERM",
        ),
        (
            "kexec_load",
            libc::SYS_kexec_load,
            vec![0, 0, 0, 0],
            "EPERM",
        ),
        ("init_module", libc::SYS_init_module, vec![0, 0, 0], "EPERM"),
        (
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            vec![0, 0, 0],
            "EPERM",
        ),
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        ("iopl", libc::SYS_iopl, vec![3], "EPERM"),
        (
            "x32-getpid",
            0x4000_0000 + libc::SYS_getpid,
            vec![],
            "EPERM",
        ),
    ]);
    calls
}

#[test]
fn dangerous_syscalls_are_refused_and_ordinary_ones_work() {
    let Some(judge) = judge() else { return };
    let calls = refused_syscalls();
    let table: Vec<String> = calls
        .iter()
        .map(|(name, number, args, _)| format!("({name:?}, {number}, {args:?})"))
        .collect();
    // Prints one line per call; the case passes only when every call got its errno and fork
    // and threads still work.
    let source = format!(
        "import ctypes, errno, os, threading\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         for name, number, args in [{}]:\n    \
             ctypes.set_errno(0)\n    \
             result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])\n    \
             if result == 0 and name.startswith('clone'):\n        os._exit(0)\n    \
             code = ctypes.get_errno()\n    \
             print(name, errno.errorcode.get(code, code) if result == -1 else 'returned %d' % result)\n\
         pid = os.fork()\nif pid == 0:\n    os._exit(7)\n\
         print('fork', os.waitpid(pid, 0)[1] >> 8)\n\
         t = threading.Thread(target=print, args=('thread ok',))\nt.start()\nt.join()\n",
        table.join(", ")
    );
    let mut expected: Vec<String> = calls
        .iter()
        .map(|(name, _, _, errno)| format!("{name} {errno}"))
        .collect();
    expected.extend(["fork 7".to_string(), "thread ok".to_string()]);
    let verdict = judge.run(stdin_job(&source, "", &expected.join("\n")));
    assert_eq!(verdict.outcome, CodeOutcome::Passed, "{verdict:?}");
    assert_still_serving(judge, "refused syscalls");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn i386_syscalls_kill_the_program() {
    // `mov eax, 20 (getpid); int 0x80; ret`: the i386 entry point, which a filter keyed on
    // x86-64 numbers would misread.
    let source = "import ctypes, mmap\n\
                  code = bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3])\n\
                  memory = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n\
                  memory.write(code)\n\
                  address = ctypes.addressof(ctypes.c_char.from_buffer(memory))\n\
                  ctypes.CFUNCTYPE(ctypes.c_int)(address)()\n\
                  print('survived')\n";
    attack(
        "int 0x80",
        stdin_job(source, "", "survived"),
        Some(CodeOutcome::RuntimeError),
    );
}

// ---------------------------------------------------------------------------------------------
// Forged assert-style passes (issue 14, item 3): the candidate's functions run in one sandbox,
// the tests in another that no candidate code reaches. Each forge is a wrong solution that
// passed when both shared a process.

#[test]
fn forge_reading_the_nonce_from_the_callers_frame_scores_zero() {
    let source = "import os, sys\n\
                  def add(a, b):\n    \
                      frame = sys._getframe(1)\n    \
                      while frame is not None:\n        \
                          for value in list(frame.f_locals.values()):\n            \
                              if type(value) is bytes and len(value.strip()) == 32:\n                \
                                  os.write(1, value)\n                \
                                  os._exit(0)\n        \
                          frame = frame.f_back\n    \
                      return a - b\n";
    attack(
        "nonce from the caller's frame",
        assert_job(source, ADD_TESTS),
        Some(CodeOutcome::RuntimeError),
    );
}

#[test]
fn forge_walking_gc_and_inspect_for_the_nonce_scores_zero() {
    let source = "import gc, inspect, os\n\
                  def proof():\n    \
                      for info in inspect.stack():\n        \
                          for value in list(info.frame.f_locals.values()):\n            \
                              if type(value) is bytes and len(value.strip()) == 32:\n                \
                                  return value\n    \
                      for holder in gc.get_objects():\n        \
                          if type(holder) is dict:\n            \
                              for value in list(holder.values()):\n                \
                                  if type(value) is bytes and len(value.strip()) == 32:\n                    \
                                      return value\n\
                  def add(a, b):\n    \
                      found = proof()\n    \
                      if found:\n        \
                          os.write(1, found)\n        \
                          os._exit(0)\n    \
                      return a - b\n";
    attack(
        "nonce from a gc/inspect walk",
        assert_job(source, ADD_TESTS),
        Some(CodeOutcome::RuntimeError),
    );
}

#[test]
fn forge_emptying_the_tests_locals_scores_zero() {
    // Replaces every code object in the calling frames (the runner's compiled tests among them)
    // with an empty one, and writes the change back into the frames' fast locals.
    let source = "import ctypes, sys\n\
                  empty = compile('', 'tests.py', 'exec')\n\
                  frame = sys._getframe(1)\n\
                  while frame is not None:\n    \
                      names = [n for n, v in frame.f_locals.items() if type(v) is type(empty)]\n    \
                      for name in names:\n        \
                          frame.f_locals[name] = empty\n    \
                      if names:\n        \
                          ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))\n    \
                      frame = frame.f_back\n\
                  def add(a, b):\n    \
                      return a - b\n";
    attack(
        "empty the tests' locals",
        assert_job(source, ADD_TESTS),
        Some(CodeOutcome::RuntimeError),
    );
}

#[test]
fn forge_swapping_math_in_sys_modules_scores_zero() {
    let source = "import sys, types\n\
                  fake = types.ModuleType('math')\n\
                  fake.isclose = lambda *args, **kwargs: True\n\
                  fake.pi = 3.0\n\
                  sys.modules['math'] = fake\n\
                  def circle_area(r):\n    \
                      return 0.0\n";
    let tests = "import math\n\
                 assert math.isclose(circle_area(1.0), math.pi)\n\
                 assert math.isclose(circle_area(2.0), 4 * math.pi)\n";
    attack(
        "swap math in sys.modules",
        assert_job(source, tests),
        Some(CodeOutcome::RuntimeError),
    );
}

#[test]
fn forge_patching_json_loads_scores_zero() {
    let source = "import json\n\
                  json.loads = lambda *args, **kwargs: {'name': 'r1', 'ok': True}\n\
                  def to_json(record):\n    \
                      return 'not json'\n";
    let tests = "import json\n\
                 record = {'name': 'r1', 'ok': True}\n\
                 assert json.loads(to_json(record)) == record\n";
    attack(
        "patch json.loads",
        assert_job(source, tests),
        Some(CodeOutcome::RuntimeError),
    );
}

#[test]
fn forge_objects_equal_to_everything_score_zero() {
    let anything = "class Anything:\n    \
                        def __eq__(self, other):\n        return True\n    \
                        def __ne__(self, other):\n        return False\n    \
                        __hash__ = object.__hash__\n\
                    def add(a, b):\n    \
                        return Anything()\n";
    attack(
        "an object equal to everything",
        assert_job(anything, ADD_TESTS),
        Some(CodeOutcome::RuntimeError),
    );
    // A subclass of a plain type is refused too: only exact built-in types cross.
    let int_like = "class Int(int):\n    \
                        def __eq__(self, other):\n        return True\n    \
                        __hash__ = int.__hash__\n\
                    def add(a, b):\n    \
                        return [Int(0)][0]\n";
    attack(
        "an int subclass equal to everything",
        assert_job(int_like, ADD_TESTS),
        Some(CodeOutcome::RuntimeError),
    );
    let str_like = "class Str(str):\n    \
                        def __eq__(self, other):\n        return True\n    \
                        __hash__ = str.__hash__\n\
                    def greet(name):\n    \
                        return {'greeting': Str('no')}\n";
    attack(
        "a str subclass inside a dict",
        assert_job(str_like, "assert greet('r1') == {'greeting': 'hello r1'}\n"),
        Some(CodeOutcome::RuntimeError),
    );
}

#[test]
fn a_candidate_cannot_shadow_the_tests_builtins() {
    // Candidate functions named like builtins are not handed to the tests: `len` stays Python's.
    let source = "def len(value):\n    return 3\ndef items():\n    return [1]\n";
    attack(
        "shadow len",
        assert_job(source, "assert len(items()) == 3\n"),
        Some(CodeOutcome::RuntimeError),
    );
}

#[test]
fn assert_style_solutions_pass_over_the_channel() {
    let Some(judge) = judge() else { return };
    let source = r#"import math

def add(a, b):
    return a + b

def stats(values):
    return {"min": min(values), "max": max(values), "sorted": sorted(values), "ends": (values[0], values[-1])}

def words(text):
    print("debugging output on stdout does not disturb the channel")
    return text.split()

def parse(text):
    if not text:
        raise ValueError("empty input")
    return int(text)

def mixed():
    return [None, True, 2.5, float("inf"), float("nan"), b"\x00\xff", {1, 2}, frozenset({3}), {(1, 2): "pair", 3: [4]}, -0.0]

def power(base, exponent=2):
    return base ** exponent

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def lookup(table, key):
    return table[key]

class _Helper:
    def twice(self, x):
        return 2 * x

def twice(x):
    return _Helper().twice(x)

if __name__ == "__main__":
    print("the main block runs, without input")
"#;
    let tests = r#"import math
assert add(2, 3) == 5 and type(add(2, 3)) is int
assert add("a", "b") == "ab"
assert add([1], [2]) == [1, 2]
assert add(10 ** 30, 1) == 10 ** 30 + 1
s = stats([3, 1, 2])
assert s == {"min": 1, "max": 3, "sorted": [1, 2, 3], "ends": (3, 2)}
assert type(s["ends"]) is tuple
assert words("a b  c") == ["a", "b", "c"]
try:
    parse("")
except ValueError as error:
    assert "empty" in str(error)
else:
    raise AssertionError("parse('') must raise ValueError")
assert parse("42") == 42
try:
    lookup({"a": 1}, "b")
except KeyError:
    pass
else:
    raise AssertionError("a missing key must raise KeyError")
m = mixed()
assert m[:3] == [None, True, 2.5] and math.isinf(m[3]) and math.isnan(m[4])
assert m[5] == b"\x00\xff" and m[6] == {1, 2} and m[7] == frozenset({3})
assert m[8] == {(1, 2): "pair", 3: [4]} and math.copysign(1, m[9]) == -1
assert power(3) == 9 and power(2, exponent=10) == 1024
assert fib(15) == 610
assert twice(21) == 42
"#;
    let verdict = judge.run(assert_job(source, tests));
    assert_eq!(verdict.outcome, CodeOutcome::Passed, "{verdict:?}");
    assert_eq!(verdict.reward, 1.0);
}

#[test]
fn the_channel_to_the_solution_fails_closed() {
    let failing_add = "def add(a, b):\n    return a - b\n";
    // The solution dies mid-call; tests that swallow every exception still cannot pass.
    for swallow in ["Exception", "BaseException"] {
        attack(
            &format!("die mid-call, tests catch {swallow}"),
            assert_job(
                "import os\ndef boom():\n    os._exit(0)\n",
                &format!("try:\n    boom()\nexcept {swallow}:\n    pass\n"),
            ),
            Some(CodeOutcome::RuntimeError),
        );
    }
    // Results over the message cap, or nested past the depth cap, break the channel.
    attack(
        "huge result",
        assert_job(
            "def big():\n    return 'x' * (10 ** 7)\n",
            "assert len(big()) == 10 ** 7\n",
        ),
        Some(CodeOutcome::RuntimeError),
    );
    attack(
        "deeply nested result",
        assert_job(
            "def deep():\n    x = []\n    for _ in range(10000):\n        x = [x]\n    return x\n",
            "deep()\n",
        ),
        Some(CodeOutcome::RuntimeError),
    );
    // Writing look-alike replies on every descriptor, then closing them.
    attack(
        "forged replies on every fd",
        assert_job(
            &format!(
                "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'{{\"names\": [\"add\"]}}\\n{{\"ok\": 3}}\\n')\n        os.close(fd)\n    except OSError:\n        pass\n{failing_add}"
            ),
            "assert add(1, 2) == 4\n",
        ),
        None,
    );
    // StopIteration from the solution would end `all(map(...))` early as if every item passed.
    attack(
        "StopIteration ends the tests' iteration",
        assert_job(
            "def is_prime(n):\n    raise StopIteration\n",
            "assert all(map(is_prime, [2, 3, 5, 7]))\nassert not any(map(is_prime, [4, 6, 8]))\n",
        ),
        Some(CodeOutcome::RuntimeError),
    );
    attack(
        "a slow function",
        assert_job(
            "import time\ndef add(a, b):\n    time.sleep(60)\n    return a + b\n",
            ADD_TESTS,
        ),
        Some(CodeOutcome::TimedOut),
    );
    attack(
        "an error at the top level",
        assert_job(
            &format!("{ADD_FN}raise ValueError('broken on import')\n"),
            ADD_TESTS,
        ),
        Some(CodeOutcome::RuntimeError),
    );
}
