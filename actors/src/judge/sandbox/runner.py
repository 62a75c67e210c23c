# r1 sandbox runner: the trusted prologue that runs inside bubblewrap before the candidate's code.
#
# stdin carries, in order: one header line "R1 <nproc> <source_len> <tests_len> <proof_token>\n",
# the candidate's source (source_len bytes), the assert-style test code (tests_len bytes), then, in
# stdin/stdout mode, the test case's input, which the candidate reads from the same fd 0.
#
# stdin/stdout mode (tests_len == 0): the candidate runs as __main__; the judge compares its stdout
# outside the sandbox, so nothing here needs to be trusted beyond the process limit.
#
# assert mode (tests_len > 0): the proof token, the tests and the solution are read and fd 0 is
# replaced by /dev/null before the candidate runs, so neither the token nor the tests can be read
# from stdin. The token line is written on fd 1 only after the solution and then the tests ran to
# their end without raising; exiting early, raising SystemExit, printing look-alike lines, killing
# this process or closing fd 1 all leave the proof unwritten, which scores 0.
import os
import resource
import sys


def _r1_read_exact(n):
    chunks = []
    while n > 0:
        chunk = os.read(0, min(n, 1 << 16))
        if not chunk:
            raise EOFError("r1 runner: stdin ended before the announced length")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _r1_main():
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte or len(header) > 256:
            raise EOFError("r1 runner: malformed header")
        header += byte
    magic, nproc, source_len, tests_len, token = header.decode("ascii").split()
    if magic != "R1":
        raise ValueError("r1 runner: bad magic")
    source = _r1_read_exact(int(source_len)).decode("utf-8")
    tests = _r1_read_exact(int(tests_len)).decode("utf-8")
    # RLIMIT_NPROC is set here rather than on bwrap: inside the sandbox's own user namespace the
    # kernel counts processes per sandbox, so one candidate's fork bomb cannot starve the others.
    resource.setrlimit(resource.RLIMIT_NPROC, (int(nproc), int(nproc)))
    solution = compile(source, "solution.py", "exec")
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    if not tests:
        del header, token
        exec(solution, scope)
        return
    checks = compile(tests, "tests.py", "exec")
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # Everything used after the candidate ran is bound now, so monkeypatching builtins, os or sys
    # cannot skip the tests or fake the proof.
    pristine_builtins = dict(__builtins__.__dict__)
    proof = ("\n" + token + "\n").encode("ascii")
    del header, token, source, tests
    run, write, leave, stdout, stderr = exec, os.write, os._exit, sys.stdout, sys.stderr
    settrace, setprofile = sys.settrace, sys.setprofile
    run(solution, scope)
    # A trace function could jump over failing asserts; the tests run without one.
    settrace(None)
    setprofile(None)
    scope["__builtins__"] = pristine_builtins
    run(checks, scope)
    stdout.flush()
    stderr.flush()
    if write(1, proof) != len(proof):
        leave(3)
    leave(0)


_r1_main()
