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

use r1_actors::judge::sandbox::{
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
    // Closing stdout also loses the proof of a passing run: fail closed, never open.
    attack(
        "close stdout, correct",
        assert_job(&format!("{ADD_FN}import os\nos.close(1)\n"), ADD_TESTS),
        None,
    );
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
