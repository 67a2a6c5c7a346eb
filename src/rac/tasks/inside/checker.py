"""Runs inside the check's own sandbox, never beside the program: runs a HumanEval-style
``check(candidate)`` where ``candidate`` is a stand-in that sends each call, as plain data, to the
program's sandbox (fd 4) and returns the plain value that comes back (fd 5).

    checker.py    stdin: {"check": "<source defining check(candidate)>", "entry_point": "<name>"}
                  writes one line to fd 3: {"passed": true} | {"failed": "<exception type>"} |
                  {"ended": true} (the program stopped answering) | {"unsupported": "<why>"}

The program never sees the check's source or its expected values, only the arguments of each call;
it cannot reach this process, so it cannot make ``check`` return (or its asserts hold) but by
answering every call with the values ``check`` accepts.
"""

import builtins
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plain  # noqa: E402  (beside this file in /harness)


class ProgramEnded(BaseException):
    """The program's sandbox closed its end: a BaseException, so ``except Exception`` in a check
    does not swallow it."""


class Unsupported(BaseException):
    """The check passed an argument that is not plain data (a test this form cannot run)."""


def stand_in(replies, name: str, trouble: list):
    """``candidate`` for the check; ``trouble`` records an ended program or an unsupported call,
    so that a check which swallows every exception still does not pass."""
    def fail(error: BaseException):
        trouble.append(error)
        raise error

    def candidate(*args, **kwargs):
        try:
            request = plain.encode({"args": args, "kwargs": kwargs})
        except plain.NotPlain as e:
            fail(Unsupported(f"an argument of {name}() is not plain data ({e})"))
        try:
            plain.send(4, request)
            line = replies.readline()
        except BrokenPipeError:
            line = b""
        if not line:
            fail(ProgramEnded())
        return unpack(json.loads(line), name)

    candidate.__name__ = candidate.__qualname__ = name
    return candidate


def unpack(reply: dict, name: str):
    """The reply as the call's outcome: its value, or the exception it raised. StopIteration
    comes back as RuntimeError (as from a generator, PEP 479): raised from the ``lambda`` of a
    ``map`` it would end the check's own iteration, so ``all(map(...))`` would hold unasked."""
    if "value" in reply:
        return plain.untree(reply["value"])
    if "not_plain" in reply:
        raise TypeError(f"{name}() returned a {reply['not_plain']}, which is not plain data")
    raised = getattr(builtins, str(reply.get("raised")), None)
    if isinstance(raised, type) and issubclass(raised, Exception) and \
            not issubclass(raised, (StopIteration, StopAsyncIteration)):
        raise raised(f"raised by {name}()")
    raise RuntimeError(f"{name}() raised {reply.get('raised')!r}")


def run_check(request: dict) -> dict:
    name, trouble = request["entry_point"], []
    with os.fdopen(5, "rb") as replies:
        candidate = stand_in(replies, name, trouble)
        namespace = {"__name__": "check", name: candidate, "__builtins__": builtins}
        try:
            exec(compile(request["check"], "<check>", "exec"), namespace)
            namespace["check"](candidate)
        except (ProgramEnded, Unsupported):
            pass
        except Exception as e:
            return {"failed": type(e).__name__}
    if trouble:
        first = trouble[0]
        return {"ended": True} if isinstance(first, ProgramEnded) else {"unsupported": str(first)}
    return {"passed": True}


def main() -> None:
    report = run_check(json.loads(sys.stdin.read()))
    plain.send(3, json.dumps(report))
    os._exit(0)


if __name__ == "__main__":
    main()
