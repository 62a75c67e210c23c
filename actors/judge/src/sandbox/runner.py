# r1 sandbox runner: the trusted prologue that runs inside bubblewrap before any candidate code.
#
# stdin starts with one header line
#   "R1 <mode> <nproc> <in_fd> <out_fd> <max_message> <proof_token> <payload_len>\n"
# then the payload (payload_len bytes of UTF-8) and, in "run" mode, the test case's input, which the
# candidate reads from the same fd 0.
#
# run (stdin/stdout cases): the payload is the candidate's source, run as __main__. The judge
# compares its stdout outside the sandbox, so nothing here needs to be trusted beyond the process
# limit.
#
# serve (the candidate's half of an assert-style job): the payload is the candidate's source. fd 0
# becomes /dev/null and the source runs as __main__; then this prologue writes on <out_fd> one JSON
# line {"names": [...]} naming the candidate's top-level callables, and answers every request line
# {"call": name, "args": [...], "kwargs": {...}} read from <in_fd> with one line, {"ok": value} or
# {"raise": [type name, message]}. This process is the candidate's: nothing it says is trusted, it
# is only data that the tests' process decodes strictly.
#
# tests (the verdict's half): the payload is the assert-style tests, and no candidate code ever
# runs in this process. Each callable the solution named becomes a proxy that sends its arguments
# on <out_fd> and decodes the reply from <in_fd> into fresh built-in objects. The proof token is
# written on fd 1 only after the tests ran to their end and the channel to the solution never
# broke (ended, overflowed, malformed): a test cannot pass by swallowing that failure.
#
# Values on the wire ("plain data"): null, true/false, integers, finite floats, strings, lists as
# JSON arrays, and every other value as an object {"t": tag, "v": payload}: float ("nan", "inf",
# "-inf"), tuple, set, frozenset (lists of values), dict (a list of [key, value] pairs), bytes
# (hex). The encoder accepts exact built-in types only (`type(x) is int`, never a subclass), both
# sides cap the nesting depth, and a line over <max_message> bytes breaks the channel.
import os
import resource
import sys

_R1_MAX_DEPTH = 100
_R1_MAX_NAMES = 10000
_R1_MAX_MESSAGE_CHARS = 2000


class _R1ProtocolError(Exception):
    """A message that is not plain data, too large, too deep, or malformed."""


class _R1Unencodable(Exception):
    """A value that is not plain data: an object, a subclass, a generator, too deep."""


def _r1_read_exact(n):
    chunks = []
    while n > 0:
        chunk = os.read(0, min(n, 1 << 16))
        if not chunk:
            raise EOFError("r1 runner: stdin ended before the announced length")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class _R1LineReader:
    """Reads newline-terminated messages from one fd, refusing any over `cap` bytes."""

    def __init__(self, fd, cap):
        self.fd = fd
        self.cap = cap
        self.buffer = bytearray()

    def read(self):
        """The next line without its newline, or None at end of file."""
        while True:
            end = self.buffer.find(b"\n")
            if end > self.cap or (end < 0 and len(self.buffer) > self.cap):
                raise _R1ProtocolError("a message over %d bytes" % self.cap)
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                return line
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk


def _r1_write_line(fd, message):
    import json

    data = json.dumps(message, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    view = memoryview((data + "\n").encode("ascii"))
    while view:
        view = view[os.write(fd, view) :]


def _r1_encode(value, depth=0):
    """`value` as plain data, or _R1Unencodable: exact built-in types only."""
    if depth > _R1_MAX_DEPTH:
        raise _R1Unencodable("nested deeper than %d levels" % _R1_MAX_DEPTH)
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        return value
    if kind is float:
        if value != value:
            return {"t": "float", "v": "nan"}
        if value in (float("inf"), float("-inf")):
            return {"t": "float", "v": "inf" if value > 0 else "-inf"}
        return value
    if kind is list:
        return [_r1_encode(item, depth + 1) for item in value]
    if kind is tuple:
        return {"t": "tuple", "v": [_r1_encode(item, depth + 1) for item in value]}
    if kind is set or kind is frozenset:
        tag = "set" if kind is set else "frozenset"
        return {"t": tag, "v": [_r1_encode(item, depth + 1) for item in value]}
    if kind is dict:
        pairs = [[_r1_encode(k, depth + 2), _r1_encode(v, depth + 2)] for k, v in value.items()]
        return {"t": "dict", "v": pairs}
    if kind is bytes:
        return {"t": "bytes", "v": value.hex()}
    raise _R1Unencodable("a value of a type other than the plain built-ins")


def _r1_decode(value, depth=0):
    """Fresh built-in objects from parsed JSON, or _R1ProtocolError."""
    if depth > _R1_MAX_DEPTH:
        raise _R1ProtocolError("a value nested deeper than %d levels" % _R1_MAX_DEPTH)
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is float or kind is str:
        return value
    if kind is list:
        return [_r1_decode(item, depth + 1) for item in value]
    if kind is not dict or len(value) != 2 or "t" not in value or "v" not in value:
        raise _R1ProtocolError("a value that is not plain data")
    tag, payload = value["t"], value["v"]
    try:
        if tag == "float" and payload in ("nan", "inf", "-inf"):
            return float(payload)
        if tag == "bytes" and type(payload) is str:
            return bytes.fromhex(payload)
        if type(payload) is list:
            if tag == "dict":
                pairs = {}
                for pair in payload:
                    if type(pair) is not list or len(pair) != 2:
                        raise _R1ProtocolError("a dict entry that is not a [key, value] pair")
                    pairs[_r1_decode(pair[0], depth + 2)] = _r1_decode(pair[1], depth + 2)
                return pairs
            items = [_r1_decode(item, depth + 1) for item in payload]
            if tag == "tuple":
                return tuple(items)
            if tag == "set":
                return set(items)
            if tag == "frozenset":
                return frozenset(items)
    except (TypeError, ValueError) as error:
        raise _R1ProtocolError("a malformed %s: %s" % (tag, error)) from None
    raise _R1ProtocolError("a value tagged %r" % (tag,))


def _r1_parse(line):
    """One JSON message; NaN/Infinity literals, huge numbers and deep nesting are refused."""
    import json

    def refuse(constant):
        raise _R1ProtocolError("the JSON constant %s" % constant)

    try:
        message = json.loads(line, parse_constant=refuse)
    except _R1ProtocolError:
        raise
    except (ValueError, RecursionError, UnicodeDecodeError) as error:
        raise _R1ProtocolError("a malformed message: %s" % error) from None
    if type(message) is not dict:
        raise _R1ProtocolError("a message that is not a JSON object")
    return message


def _r1_serve(source, in_fd, out_fd, cap):
    import json

    solution = compile(source, "solution.py", "exec")
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    requests = _R1LineReader(in_fd, cap)
    # Bound before the candidate runs so that an honest server keeps working when the candidate
    # rebinds builtins; a dishonest one can say anything, which the tests side decodes as data.
    run, send, encode, decode, parse = exec, _r1_write_line, _r1_encode, _r1_decode, _r1_parse
    leave, flush_out, flush_err = os._exit, sys.stdout.flush, sys.stderr.flush
    del source
    run(solution, scope)
    names = []
    for name, value in list(scope.items()):
        if type(name) is str and callable(value) and not name.startswith("__"):
            names.append(name)
    send(out_fd, {"names": names})
    while True:
        line = requests.read()
        if line is None:
            # The tests are over; threads the candidate left behind must not keep this alive.
            try:
                flush_out()
                flush_err()
            finally:
                leave(0)
        try:
            request = parse(line)
            function = scope[request["call"]]
            args = [decode(arg) for arg in request["args"]]
            kwargs = {key: decode(arg) for key, arg in request["kwargs"].items()}
        except Exception as error:
            send(out_fd, {"raise": ["R1ProtocolError", "a malformed request: %s" % error]})
            continue
        try:
            result = function(*args, **kwargs)
        except BaseException as error:
            send(out_fd, {"raise": _r1_describe(error)})
            continue
        try:
            reply = {"ok": encode(result)}
            json.dumps(reply, allow_nan=False)
        except Exception as error:
            reason = "the result cannot be sent to the tests (%s)" % error
            reply = {"raise": ["R1UnencodableResult", reason]}
        send(out_fd, reply)


def _r1_describe(error):
    """[type name, message] of an exception raised by candidate code, as plain strings."""
    try:
        name = type(error).__name__
        name = name if type(name) is str else "Exception"
    except BaseException:
        name = "Exception"
    try:
        message = str(error)
        message = message if type(message) is str else ""
    except BaseException:
        message = ""
    return [name[:200], message[:_R1_MAX_MESSAGE_CHARS]]


def _r1_tests(tests, token, in_fd, out_fd, cap):
    import builtins
    import json
    import keyword
    import threading

    checks = compile(tests, "tests.py", "exec")
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    proof = ("\n" + token + "\n").encode("ascii")
    del tests, token
    replies = _R1LineReader(in_fd, cap)
    lock = threading.Lock()
    broken = []

    class SolutionGone(BaseException):
        """The solution's process ended or broke the protocol; no test can pass after this.

        A BaseException, so that `except Exception` in the tests does not swallow it."""

    class SolutionError(Exception):
        """The solution raised an exception that is not a built-in one (named in the message)."""

    def fail(reason):
        broken.append(reason)
        raise SolutionGone(reason)

    def receive():
        try:
            line = replies.read()
            if line is None:
                fail("the solution's process ended")
            return _r1_parse(line)
        except (_R1ProtocolError, OSError) as error:
            fail("the solution sent %s" % error)

    try:
        first = receive()
    except SolutionGone:
        # The candidate left (exit, os._exit, a signal) before serving: no proof, exit status 0
        # when it left quietly; the judge reads the solution's own exit status beside this.
        sys.stderr.write("r1: the solution ended before it served its functions\n")
        sys.stderr.flush()
        os._exit(0)
    names = first.get("names") if set(first) == {"names"} else None
    if type(names) is not list or len(names) > _R1_MAX_NAMES:
        sys.stderr.write("r1: the solution's first message is not its list of functions\n")
        sys.stderr.flush()
        os._exit(1)
    # The solution's exceptions come back as the same built-in class, so that the tests' own
    # try/except checks work; never StopIteration, which would silently end a `map` or `all`
    # over the solution's function as if every item had been checked.
    builtin_exceptions = {
        name: value
        for name, value in vars(builtins).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and not issubclass(value, (StopIteration, StopAsyncIteration))
    }

    def answer(reply):
        if set(reply) == {"ok"}:
            try:
                return _r1_decode(reply["ok"])
            except _R1ProtocolError as error:
                fail("the solution sent %s" % error)
        raised = reply.get("raise") if set(reply) == {"raise"} else None
        if type(raised) is list and len(raised) == 2 and all(type(s) is str for s in raised):
            name, message = raised[0][:200], raised[1][:_R1_MAX_MESSAGE_CHARS]
            kind = builtin_exceptions.get(name)
            try:
                error = kind(message) if kind is not None else None
            except Exception:
                error = None
            raise error if error is not None else SolutionError("%s: %s" % (name, message))
        fail("the solution sent a reply that is neither a value nor an exception")

    def proxy(name):
        def call(*args, **kwargs):
            try:
                request = {
                    "call": name,
                    "args": [_r1_encode(arg) for arg in args],
                    "kwargs": {str(key): _r1_encode(arg) for key, arg in kwargs.items()},
                }
            except _R1Unencodable as error:
                raise TypeError("r1: an argument of %s() is not plain data: %s" % (name, error))
            with lock:
                if broken:
                    raise SolutionGone(broken[0])
                try:
                    _r1_write_line(out_fd, request)
                except OSError as error:
                    fail("the solution's process ended (%s)" % error)
                reply = receive()
            return answer(reply)

        call.__name__ = call.__qualname__ = name
        return call

    scope = {"__name__": "__main__", "__builtins__": builtins}
    for name in names:
        # Only names that could be the candidate's own functions: never a builtin (a candidate's
        # `len` or `isinstance` would otherwise answer for the tests' own checks) nor a dunder.
        if (
            type(name) is str
            and name.isidentifier()
            and not keyword.iskeyword(name)
            and not name.startswith("__")
            and name not in vars(builtins)
        ):
            scope[name] = proxy(name)
    exec(checks, scope)
    if broken:
        sys.stderr.write("r1: %s\n" % broken[0])
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.write(1, proof) != len(proof):
        os._exit(3)
    os._exit(0)


def _r1_main():
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte or len(header) > 256:
            raise EOFError("r1 runner: malformed header")
        header += byte
    magic, mode, nproc, in_fd, out_fd, cap, token, payload_len = header.decode("ascii").split()
    if magic != "R1":
        raise ValueError("r1 runner: bad magic")
    payload = _r1_read_exact(int(payload_len)).decode("utf-8")
    # RLIMIT_NPROC is set here rather than on bwrap: inside the sandbox's own user namespace the
    # kernel counts processes per sandbox, so one candidate's fork bomb cannot starve the others.
    resource.setrlimit(resource.RLIMIT_NPROC, (int(nproc), int(nproc)))
    del header
    if mode == "run":
        del token
        solution = compile(payload, "solution.py", "exec")
        del payload
        exec(solution, {"__name__": "__main__", "__builtins__": __builtins__})
    elif mode == "serve":
        del token
        _r1_serve(payload, int(in_fd), int(out_fd), int(cap))
    elif mode == "tests":
        _r1_tests(payload, token, int(in_fd), int(out_fd), int(cap))
    else:
        raise ValueError("r1 runner: unknown mode %r" % mode)


_r1_main()
